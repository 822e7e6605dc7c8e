//! The sweep's charts, drawn with plotters as PNG and SVG: test top-1 against parameters, MACs
//! and training time (one point per finished run), and learning curves (test top-1 per epoch
//! and against wall-clock minutes, one line per run); one colour per family, labelled axes and a
//! legend.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::Row;

/// Charts folder, in the sweep folder.
pub const CHARTS_DIR: &str = "charts";
const SIZE: (u32, u32) = (900, 600);
/// Text in PNGs is drawn with this font (DejaVu Sans, cut to Latin-1: assets/fonts/README.md),
/// so charts never depend on the machine's fonts.
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure would only lose text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One point of a scatter chart.
struct Point {
    x: f64,
    y: f64,
    family: String,
    label: String,
}

/// Draws every chart the rows allow into `dir` (PNG and SVG); returns the charts' names.
pub fn draw_all(dir: &Path, rows: &[Row]) -> anyhow::Result<Vec<String>> {
    register_font();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let done: Vec<&Row> = rows
        .iter()
        .filter(|r| r.status == "done" && r.final_top1.is_some())
        .collect();
    let families: Vec<String> = done
        .iter()
        .map(|r| r.family.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut drawn = Vec::new();
    let scatter_of = |x: &dyn Fn(&Row) -> Option<f64>| -> Vec<Point> {
        done.iter()
            .filter_map(|r| {
                Some(Point {
                    x: x(r)?,
                    y: r.final_top1?,
                    family: r.family.clone(),
                    label: r.trained_model.clone(),
                })
            })
            .collect()
    };
    let charts: [(&str, &str, &str, Vec<Point>, bool); 3] = [
        (
            "accuracy_vs_params",
            "Test top-1 vs parameters",
            "parameters (log scale)",
            scatter_of(&|r| r.params.map(|p| p as f64)),
            true,
        ),
        (
            "accuracy_vs_macs",
            "Test top-1 vs multiply-accumulates per image",
            "MMACs per image (log scale)",
            scatter_of(&|r| r.macs.map(|m| m as f64 / 1e6)),
            true,
        ),
        (
            "accuracy_vs_time",
            "Test top-1 vs training time",
            "wall-clock training time per run (s)",
            scatter_of(&|r| r.wall_seconds),
            false,
        ),
    ];
    for (name, title, x_label, points, log_x) in &charts {
        if points.is_empty() {
            continue;
        }
        let png = dir.join(format!("{name}.png"));
        let svg = dir.join(format!("{name}.svg"));
        scatter(
            BitMapBackend::new(&png, SIZE).into_drawing_area(),
            title,
            x_label,
            points,
            &families,
            *log_x,
        )
        .with_context(|| format!("drawing {}", png.display()))?;
        scatter(
            SVGBackend::new(&svg, SIZE).into_drawing_area(),
            title,
            x_label,
            points,
            &families,
            *log_x,
        )
        .with_context(|| format!("drawing {}", svg.display()))?;
        drawn.push(name.to_string());
    }
    let curves: Vec<&Row> = rows.iter().filter(|r| !r.curve.is_empty()).collect();
    if !curves.is_empty() {
        let fams: Vec<String> = curves
            .iter()
            .map(|r| r.family.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for axis in [CurveAxis::Epoch, CurveAxis::Minutes] {
            let name = axis.chart_name();
            let png = dir.join(format!("{name}.png"));
            let svg = dir.join(format!("{name}.svg"));
            learning_curves(
                BitMapBackend::new(&png, SIZE).into_drawing_area(),
                &curves,
                &fams,
                axis,
            )
            .with_context(|| format!("drawing {}", png.display()))?;
            learning_curves(
                SVGBackend::new(&svg, SIZE).into_drawing_area(),
                &curves,
                &fams,
                axis,
            )
            .with_context(|| format!("drawing {}", svg.display()))?;
            drawn.push(name.to_string());
        }
    }
    Ok(drawn)
}

/// Splits off a legend panel on the right (so the legend never hides a point) and draws one
/// entry per family in it; returns the plotting area.
fn with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    families: &[String],
    line: bool,
) -> anyhow::Result<DrawingArea<DB, Shift>>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    let (plot, legend) = root.split_horizontally(SIZE.0 - 130);
    legend
        .draw(&Text::new(
            "family",
            (10, 60),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))
        .map_err(err)?;
    for (i, family) in families.iter().enumerate() {
        let colour = colour_of(families, family);
        let y = 90 + 26 * i as i32;
        if line {
            legend
                .draw(&PathElement::new(
                    vec![(8, y), (30, y)],
                    colour.stroke_width(3),
                ))
                .map_err(err)?;
        } else {
            legend
                .draw(&Circle::new((19, y), 6, colour.filled()))
                .map_err(err)?;
        }
        legend
            .draw(&Text::new(
                family.clone(),
                (38, y - 8),
                ("sans-serif", 15).into_font().color(&BLACK),
            ))
            .map_err(err)?;
    }
    Ok(plot)
}

fn colour_of(families: &[String], family: &str) -> RGBColor {
    let i = families.iter().position(|f| f == family).unwrap_or(0);
    FAMILY_COLOURS[i % FAMILY_COLOURS.len()]
}

/// A range around `values` with a margin, never empty.
fn padded(values: impl Iterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
    (lo - span * margin, hi + span * margin)
}

/// Large numbers as 1.2M, 350k.
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn scatter<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    points: &[Point],
    families: &[String],
    log_x: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let plot = with_legend(&root, families, false)?;
    // A log axis as a linear axis over log10(x), labelled with the values themselves.
    let tx = |x: f64| if log_x { x.max(1e-12).log10() } else { x };
    let (x0, x1) = padded(points.iter().map(|p| tx(p.x)), 0.12);
    let (y0, y1) = padded(points.iter().map(|p| p.y), 0.12);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0.max(0.0)..y1.min(100.0).max(y0.max(0.0) + 1.0))
        .map_err(err)?;
    let x_fmt = |v: &f64| if log_x { si(10f64.powf(*v)) } else { si(*v) };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("test top-1 (%)")
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .bold_line_style(RGBColor(200, 200, 200))
        .light_line_style(RGBColor(240, 240, 240))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    for family in families {
        let colour = colour_of(families, family);
        let mine: Vec<&Point> = points.iter().filter(|p| &p.family == family).collect();
        if mine.is_empty() {
            continue;
        }
        chart
            .draw_series(
                mine.iter()
                    .map(|p| Circle::new((tx(p.x), p.y), 6, colour.filled())),
            )
            .map_err(err)?;
        chart
            .draw_series(mine.iter().map(|p| {
                EmptyElement::at((tx(p.x), p.y))
                    + Text::new(
                        p.label.clone(),
                        (9, -16),
                        ("sans-serif", 13).into_font().color(&BLACK),
                    )
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// What a learning curve is plotted against.
#[derive(Clone, Copy)]
enum CurveAxis {
    /// Epochs: how much each run learns per pass over the data.
    Epoch,
    /// Wall-clock minutes of training and evaluation: what a family buys per CPU-minute.
    Minutes,
}

impl CurveAxis {
    fn chart_name(self) -> &'static str {
        match self {
            CurveAxis::Epoch => "learning_curves",
            CurveAxis::Minutes => "learning_curves_time",
        }
    }

    /// The point's x coordinate.
    fn x(self, (epoch, seconds, _): (usize, f64, f64)) -> f64 {
        match self {
            CurveAxis::Epoch => epoch as f64,
            CurveAxis::Minutes => seconds / 60.0,
        }
    }
}

fn learning_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[&Row],
    families: &[String],
    axis: CurveAxis,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let plot = with_legend(&root, families, true)?;
    let x_max = rows
        .iter()
        .flat_map(|r| r.curve.iter().map(|&c| axis.x(c)))
        .fold(0.0, f64::max);
    let (y0, y1) = padded(rows.iter().flat_map(|r| r.curve.iter().map(|c| c.2)), 0.1);
    // Room on the right for the model names at the curves' ends.
    let (x0, x1, caption, x_desc) = match axis {
        CurveAxis::Epoch if x_max <= 1.0 => (0.5, 1.5, "per epoch", "epoch"),
        CurveAxis::Epoch => (1.0, x_max + 0.12 * (x_max - 1.0), "per epoch", "epoch"),
        CurveAxis::Minutes => (
            0.0,
            x_max.max(1.0) * 1.15,
            "against wall time",
            "minutes of training and evaluation",
        ),
    };
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!("Learning curves: test top-1 {caption}"),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0.max(0.0)..y1.min(100.0).max(y0.max(0.0) + 1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("test top-1 (%)")
        .x_labels(match axis {
            CurveAxis::Epoch => (x_max as usize + 2).min(12),
            CurveAxis::Minutes => 10,
        })
        // Whole epochs only; minutes as they fall.
        .x_label_formatter(&|v| match axis {
            CurveAxis::Epoch if (v - v.round()).abs() < 1e-6 => format!("{v:.0}"),
            CurveAxis::Epoch => String::new(),
            // Short sweeps (tests, smoke plans) end within minutes: tenths keep the ticks apart.
            CurveAxis::Minutes if x_max < 10.0 => format!("{v:.1}"),
            CurveAxis::Minutes => format!("{v:.0}"),
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .bold_line_style(RGBColor(200, 200, 200))
        .light_line_style(RGBColor(240, 240, 240))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    // One name per model: the seeds of a model end close together, and their names would print
    // over each other.
    let mut named = std::collections::BTreeSet::new();
    for r in rows {
        let colour = colour_of(families, &r.family);
        let pts: Vec<(f64, f64)> = r.curve.iter().map(|&c| (axis.x(c), c.2)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(err)?;
        if let Some(&last) = pts
            .last()
            .filter(|_| named.insert(r.trained_model.as_str()))
        {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(last)
                        + Text::new(
                            r.trained_model.clone(),
                            (6, -14),
                            ("sans-serif", 12).into_font().color(&BLACK),
                        ),
                ))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}
