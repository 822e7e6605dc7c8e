//! Drawing the CLI's pictures (`nin explain`'s panels and sheets, `nin eval --plot`'s charts): an
//! RGB canvas that images are copied onto, with text and rectangles drawn by plotters' bitmap
//! backend in the font the repository ships (assets/fonts), and written as PNG atomically.
//! The pixel work (heat maps, colours, blending) is the library's (`nin_zoo::cam`); this module
//! only lays things out.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// Text is drawn with this font (DejaVu Sans cut to Latin-1, assets/fonts/README.md), so
/// pictures never depend on the machine's fonts. Text must stay within Latin-1.
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Black, for text.
pub const INK: [u8; 3] = [20, 20, 20];
/// White, for backgrounds.
pub const PAPER: [u8; 3] = [255, 255, 255];
/// Red, for wrong predictions.
pub const WRONG: [u8; 3] = [200, 30, 30];
/// Green, for right ones.
pub const RIGHT: [u8; 3] = [20, 120, 40];
/// Grey, for secondary text and grid lines.
pub const GREY: [u8; 3] = [110, 110, 110];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure would only lose text.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Where a text's position is: its left edge, its centre or its right edge, at its top.
#[derive(Clone, Copy, Debug)]
pub enum Align {
    /// The position is the text's top-left corner.
    Left,
    /// The position is the middle of the text's top edge.
    Center,
    /// The position is the text's top-right corner.
    Right,
}

/// An RGB picture being laid out.
pub struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    /// A `width × height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: [u8; 3]) -> Self {
        register_font();
        let rgb = background
            .iter()
            .copied()
            .cycle()
            .take(3 * width as usize * height as usize)
            .collect();
        Self { width, height, rgb }
    }

    /// Copies an RGB (HWC) image of `w × h` with its top-left corner at `(x, y)`; what falls
    /// outside the canvas is left out.
    pub fn blit(&mut self, x: u32, y: u32, w: u32, h: u32, rgb: &[u8]) {
        for row in 0..h.min(self.height.saturating_sub(y)) {
            let cols = w.min(self.width.saturating_sub(x)) as usize;
            let src = (row * w) as usize * 3;
            let dst = ((y + row) * self.width + x) as usize * 3;
            if let (Some(from), Some(to)) = (
                rgb.get(src..src + 3 * cols),
                self.rgb.get_mut(dst..dst + 3 * cols),
            ) {
                to.copy_from_slice(from);
            }
        }
    }

    /// Fills the rectangle with its top-left corner at `(x, y)`.
    pub fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
        let patch: Vec<u8> = colour
            .iter()
            .copied()
            .cycle()
            .take(3 * w as usize * h as usize)
            .collect();
        self.blit(x, y, w, h, &patch);
    }

    /// Draws a frame `thickness` pixels wide just outside the rectangle `(x, y, w, h)`.
    pub fn frame(&mut self, x: u32, y: u32, w: u32, h: u32, thickness: u32, colour: [u8; 3]) {
        let (x0, y0) = (x.saturating_sub(thickness), y.saturating_sub(thickness));
        let (fw, fh) = (w + 2 * thickness, h + 2 * thickness);
        self.fill(x0, y0, fw, thickness, colour);
        self.fill(x0, y + h, fw, thickness, colour);
        self.fill(x0, y0, thickness, fh, colour);
        self.fill(x + w, y0, thickness, fh, colour);
    }

    /// Draws `text` at `(x, y)` (see [`Align`]) in `size`-pixel type, shrunk until it fits in
    /// `max_width` pixels (down to 7 pixels, then it is cut with an ellipsis).
    #[allow(clippy::too_many_arguments)]
    pub fn text(
        &mut self,
        x: i32,
        y: i32,
        text: &str,
        size: f64,
        colour: [u8; 3],
        align: Align,
        max_width: u32,
    ) -> anyhow::Result<()> {
        let (w, h) = (self.width, self.height);
        let area = BitMapBackend::with_buffer(&mut self.rgb, (w, h)).into_drawing_area();
        let hpos = match align {
            Align::Left => HPos::Left,
            Align::Center => HPos::Center,
            Align::Right => HPos::Right,
        };
        let rgb = RGBColor(colour[0], colour[1], colour[2]);
        let style_of = |size: f64| {
            TextStyle::from((FAMILY, size).into_font())
                .color(&rgb)
                .pos(Pos::new(hpos, VPos::Top))
        };
        let width_of = |text: &str, size: f64| -> anyhow::Result<u32> {
            Ok(area
                .estimate_text_size(text, &style_of(size))
                .map_err(|e| anyhow!("measuring the text {text:?}: {e:?}"))?
                .0)
        };
        let mut size = size;
        while size > 7.0 && width_of(text, size)? > max_width {
            size -= 1.0;
        }
        let mut shown = text.to_string();
        while shown.chars().count() > 1 && width_of(&shown, size)? > max_width {
            shown.pop();
            shown.pop();
            shown.push('…');
        }
        area.draw(&Text::new(shown, (x, y), style_of(size)))
            .map_err(|e| anyhow!("drawing the text {text:?}: {e:?}"))?;
        area.present()
            .map_err(|e| anyhow!("drawing the text {text:?}: {e:?}"))?;
        Ok(())
    }

    /// A horizontal colour bar `w × h` at `(x, y)` running through `colour_of(0..=1)`, with
    /// `low` and `high` written at its ends.
    #[allow(clippy::too_many_arguments)]
    pub fn colour_bar(
        &mut self,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        low: &str,
        high: &str,
        colour_of: impl Fn(f32) -> [u8; 3],
    ) -> anyhow::Result<()> {
        for i in 0..w {
            let t = i as f32 / (w.max(2) - 1) as f32;
            self.fill(x + i, y, 1, h, colour_of(t));
        }
        let label_y = y as i32 + (h as i32 - 12) / 2;
        self.text(x as i32 - 6, label_y, low, 12.0, INK, Align::Right, 80)?;
        self.text(
            (x + w) as i32 + 6,
            label_y,
            high,
            12.0,
            INK,
            Align::Left,
            80,
        )?;
        Ok(())
    }

    /// Encodes the canvas as PNG and writes it atomically to `path`.
    pub fn save_png(&self, path: &Path) -> anyhow::Result<()> {
        use image::ImageEncoder;
        let mut bytes = Vec::new();
        // The best compression: these pictures go into repositories and documents.
        image::codecs::png::PngEncoder::new_with_quality(
            &mut bytes,
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::Adaptive,
        )
        .write_image(
            &self.rgb,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("encoding {}", path.display()))?;
        nin_format::write_atomic(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}
