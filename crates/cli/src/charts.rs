//! `nin eval --plot DIR`: the evaluation as PNG charts, the confusion matrix normalised per true
//! class (each row sums to 100 %) and the per-class top-1 as bars, both labelled with the class
//! names.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::render::{Align, Canvas, GREY, INK, PAPER};

/// The confusion matrix chart's file name in the `--plot` folder.
pub const CONFUSION_PNG: &str = "confusion_matrix.png";
/// The per-class accuracy chart's file name in the `--plot` folder.
pub const PER_CLASS_PNG: &str = "per_class_accuracy.png";

/// Classes up to which every row and column is labelled (beyond, every tenth).
const LABEL_ALL: usize = 20;

/// Writes both charts into `dir` (created if needed); returns their paths.
pub fn write_eval_charts(
    dir: &Path,
    title: &str,
    names: &[String],
    confusion: &[Vec<u64>],
    per_class: &[f64],
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--plot {}: cannot create the folder", dir.display()))?;
    let confusion_path = dir.join(CONFUSION_PNG);
    confusion_chart(title, names, confusion)?.save_png(&confusion_path)?;
    let per_class_path = dir.join(PER_CLASS_PNG);
    per_class_chart(title, names, per_class)?.save_png(&per_class_path)?;
    Ok(vec![confusion_path, per_class_path])
}

/// The name shown for class `c`: its label, or its index when there is none.
fn name(names: &[String], c: usize) -> String {
    names.get(c).cloned().unwrap_or_else(|| c.to_string())
}

/// The confusion matrix, rows normalised per true class, coloured with viridis and written in
/// percent in each cell when the cells are big enough to hold it.
fn confusion_chart(
    title: &str,
    names: &[String],
    confusion: &[Vec<u64>],
) -> anyhow::Result<Canvas> {
    let n = confusion.len().max(1);
    let cell: u32 = (640 / n as u32).clamp(6, 64);
    let label_w = 110;
    let (left, top) = (label_w + 30, 84);
    let side = cell * n as u32;
    let width = left + side + 130;
    let height = top + side + 70;
    let mut canvas = Canvas::new(width, height, PAPER);
    canvas.text(14, 10, title, 16.0, INK, Align::Left, width - 28)?;
    canvas.text(
        14,
        34,
        "confusion matrix: share of each true class (row) predicted as each class (column)",
        13.0,
        GREY,
        Align::Left,
        width - 28,
    )?;
    let labelled = |c: usize| n <= LABEL_ALL || c % 10 == 0;
    for (t, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let y = top + t as u32 * cell;
        for (p, &count) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            };
            let x = left + p as u32 * cell;
            let colour = nin_zoo::cam::viridis(share as f32);
            canvas.fill(x, y, cell, cell, colour);
            if cell >= 36 && count > 0 {
                // Light text on the dark end of viridis, dark on the light end.
                let ink = if share < 0.55 { PAPER } else { INK };
                canvas.text(
                    (x + cell / 2) as i32,
                    (y + cell / 2) as i32 - 7,
                    &format!("{:.0}", 100.0 * share),
                    12.0,
                    ink,
                    Align::Center,
                    cell - 2,
                )?;
            }
        }
        if labelled(t) {
            let text_y = (y + cell / 2) as i32 - 7;
            canvas.text(
                left as i32 - 6,
                text_y,
                &name(names, t),
                12.0,
                INK,
                Align::Right,
                label_w,
            )?;
        }
    }
    // Column labels under the matrix, alternating between two rows when names are long.
    for p in (0..n).filter(|&p| labelled(p)) {
        let x = (left + p as u32 * cell + cell / 2) as i32;
        let stagger = if n <= LABEL_ALL && p % 2 == 1 { 15 } else { 0 };
        let max = if n <= LABEL_ALL {
            2 * cell - 4
        } else {
            10 * cell
        };
        canvas.text(
            x,
            (top + side + 4) as i32 + stagger,
            &name(names, p),
            12.0,
            INK,
            Align::Center,
            max,
        )?;
    }
    canvas.text(
        (left + side / 2) as i32,
        (top + side + 40) as i32,
        "predicted class",
        13.0,
        GREY,
        Align::Center,
        side,
    )?;
    canvas.text(
        14,
        top as i32 - 20,
        "true class",
        13.0,
        GREY,
        Align::Left,
        label_w,
    )?;
    // The colour scale, vertically beside the matrix.
    let bar_x = left + side + 24;
    for i in 0..side {
        let t = 1.0 - i as f32 / (side.max(2) - 1) as f32;
        canvas.fill(bar_x, top + i, 16, 1, nin_zoo::cam::viridis(t));
    }
    canvas.text(
        (bar_x + 22) as i32,
        top as i32 - 6,
        "100 %",
        12.0,
        INK,
        Align::Left,
        80,
    )?;
    canvas.text(
        (bar_x + 22) as i32,
        (top + side) as i32 - 8,
        "0 %",
        12.0,
        INK,
        Align::Left,
        80,
    )?;
    Ok(canvas)
}

/// One horizontal bar per class, 0 to 100 %, with its value, and the mean as a line.
fn per_class_chart(title: &str, names: &[String], per_class: &[f64]) -> anyhow::Result<Canvas> {
    let n = per_class.len().max(1) as u32;
    let bar: u32 = if n <= LABEL_ALL as u32 { 28 } else { 16 };
    let label_w = 120;
    let (left, top) = (label_w + 20, 70);
    let plot_w = 520;
    let width = left + plot_w + 80;
    let height = top + n * bar + 50;
    let mut canvas = Canvas::new(width, height, PAPER);
    canvas.text(14, 10, title, 16.0, INK, Align::Left, width - 28)?;
    canvas.text(
        14,
        34,
        "top-1 accuracy per true class",
        13.0,
        GREY,
        Align::Left,
        width - 28,
    )?;
    for tick in (0..=100).step_by(20) {
        let x = left + plot_w * tick / 100;
        canvas.fill(x, top, 1, n * bar, [225, 225, 225]);
        canvas.text(
            x as i32,
            (top + n * bar + 6) as i32,
            &format!("{tick} %"),
            12.0,
            GREY,
            Align::Center,
            60,
        )?;
    }
    let colour = [31, 119, 180];
    for (c, &acc) in per_class.iter().enumerate() {
        let y = top + c as u32 * bar;
        let w = (plot_w as f64 * acc.clamp(0.0, 100.0) / 100.0).round() as u32;
        canvas.fill(left, y + 3, w, bar - 6, colour);
        let text_y = (y + bar / 2) as i32 - 7;
        canvas.text(
            left as i32 - 6,
            text_y,
            &name(names, c),
            12.0,
            INK,
            Align::Right,
            label_w,
        )?;
        canvas.text(
            (left + w + 4) as i32,
            text_y,
            &format!("{acc:.1} %"),
            12.0,
            INK,
            Align::Left,
            70,
        )?;
    }
    let mean = per_class.iter().sum::<f64>() / per_class.len().max(1) as f64;
    let x = left + (plot_w as f64 * mean.clamp(0.0, 100.0) / 100.0).round() as u32;
    canvas.fill(x, top - 4, 2, n * bar + 4, [214, 39, 40]);
    canvas.text(
        x as i32,
        top as i32 - 20,
        &format!("mean {mean:.1} %"),
        12.0,
        [214, 39, 40],
        Align::Center,
        120,
    )?;
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_class_evaluation_draws_with_every_tenth_class_labelled() -> anyhow::Result<()> {
        let n = 100;
        let names: Vec<String> = (0..n).map(|c| format!("class_{c}")).collect();
        let confusion: Vec<Vec<u64>> = (0..n)
            .map(|t| {
                (0..n)
                    .map(|p| if p == t { 30 } else { (t + p) as u64 % 3 })
                    .collect()
            })
            .collect();
        let per_class: Vec<f64> = (0..n).map(|c| (c % 50) as f64 * 2.0).collect();
        let dir = tempfile::tempdir()?;
        let written = write_eval_charts(dir.path(), "synthetic", &names, &confusion, &per_class)?;
        // 6-pixel cells: a 600-pixel matrix; 16-pixel bars.
        let sizes: Vec<(u32, u32)> = written
            .iter()
            .map(image::image_dimensions)
            .collect::<Result<_, _>>()?;
        assert_eq!(
            sizes,
            [(140 + 600 + 130, 84 + 600 + 70), (740, 70 + 100 * 16 + 50)]
        );
        Ok(())
    }
}
