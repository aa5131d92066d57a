//! The report's charts, drawn by plotters as inline SVG (text as SVG text: the page needs no
//! fonts or scripts).

use std::ops::Range;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::ReportError;

const SIZE: (u32, u32) = (640, 320);
const CAPTION: (&str, u32) = ("sans-serif", 16);
/// Points off the frontier.
pub const GREY: RGBColor = RGBColor(175, 175, 175);
/// The series colours, in order.
pub const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// One point of a scatter chart.
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: String,
    /// Drawn in colour and joined by the frontier line; grey otherwise.
    pub highlighted: bool,
}

fn chart_error<E: std::error::Error + Send + Sync>(
    e: plotters::drawing::DrawingAreaErrorKind<E>,
) -> ReportError {
    ReportError::Chart(e.to_string())
}

/// The range of `values` with a margin; a single value gets a range around it.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> Range<f64> {
    let (mut low, high) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !low.is_finite() {
        return 0.0..1.0;
    }
    if from_zero {
        low = low.min(0.0);
    }
    if high <= low {
        let pad = if high == 0.0 { 1.0 } else { high.abs() * 0.1 };
        return (low - pad)..(high + pad);
    }
    let pad = (high - low) * 0.05;
    (if from_zero { low } else { low - pad })..(high + pad)
}

/// Draws into an SVG string with `draw`, on a white background.
fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), ReportError>,
) -> Result<String, ReportError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        draw(&root)?;
        root.present().map_err(chart_error)?;
    }
    Ok(text)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// How the x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XScale {
    Linear,
    /// Values are drawn at their log10 and labelled with the value itself.
    Log,
}

impl XScale {
    fn map(self, x: f64) -> f64 {
        match self {
            XScale::Linear => x,
            XScale::Log => x.max(1e-9).log10(),
        }
    }
}

/// A label that keeps 3 significant digits.
fn significant(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

fn axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    (x, scale): (Range<f64>, XScale),
    y: Range<f64>,
    (x_desc, y_desc): (&str, &str),
) -> Result<Chart<'a, 'b>, ReportError> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, CAPTION)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(chart_error)?;
    let x_label = |v: &f64| match scale {
        XScale::Linear => significant(*v),
        XScale::Log => significant(10f64.powf(*v)),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| significant(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(chart_error)?;
    Ok(chart)
}

/// A line chart of `series`, its y axis from 0.
pub fn lines(
    title: &str,
    descriptions: (&str, &str),
    series: &[Series],
    scale: XScale,
) -> Result<String, ReportError> {
    let x = span(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| scale.map(p.0))),
        false,
    );
    let y = span(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
    );
    svg(|root| {
        let mut chart = axes(root, title, (x, scale), y, descriptions)?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(x, y)| (scale.map(x), y)),
                    color.stroke_width(2),
                ))
                .map_err(chart_error)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(chart_error)?;
        }
        Ok(())
    })
}

/// Bars over ranges of x: (low, high, height).
pub fn ranges(
    title: &str,
    descriptions: (&str, &str),
    bars: &[(f64, f64, f64)],
    scale: XScale,
) -> Result<String, ReportError> {
    let x = span(
        bars.iter().flat_map(|b| [scale.map(b.0), scale.map(b.1)]),
        false,
    );
    let y = span(bars.iter().map(|b| b.2), true);
    svg(|root| {
        let mut chart = axes(root, title, (x, scale), y, descriptions)?;
        chart
            .draw_series(bars.iter().map(|&(low, high, height)| {
                Rectangle::new(
                    [(scale.map(low), 0.0), (scale.map(high), height)],
                    PALETTE[0].mix(0.75).filled(),
                )
            }))
            .map_err(chart_error)?;
        Ok(())
    })
}

/// Named bars, one colour each from the palette.
pub fn bars(
    title: &str,
    descriptions: (&str, &str),
    bars: &[(String, f64)],
) -> Result<String, ReportError> {
    let n = bars.len() as f64;
    let y = span(bars.iter().map(|b| b.1), true);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, CAPTION)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..n - 0.5, y)
            .map_err(chart_error)?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                bars.get(i as usize)
                    .map(|b| b.0.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len().max(1) * 2 + 1)
            .x_label_formatter(&label)
            .y_label_formatter(&|v| significant(*v))
            .light_line_style(WHITE.mix(0.0))
            .x_desc(descriptions.0)
            .y_desc(descriptions.1)
            .draw()
            .map_err(chart_error)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, height))| {
                let x = i as f64;
                let color = PALETTE[i % PALETTE.len()];
                Rectangle::new([(x - 0.35, 0.0), (x + 0.35, *height)], color.filled())
            }))
            .map_err(chart_error)?;
        Ok(())
    })
}

/// A scatter chart; the highlighted points are joined in order of x.
pub fn scatter(
    title: &str,
    descriptions: (&str, &str),
    points: &[Point],
) -> Result<String, ReportError> {
    let x = span(points.iter().map(|p| p.x), true);
    let y = span(points.iter().map(|p| p.y), true);
    svg(|root| {
        let mut chart = axes(root, title, (x, XScale::Linear), y, descriptions)?;
        let mut front: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.highlighted)
            .map(|p| (p.x, p.y))
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(front, PALETTE[1].mix(0.6).stroke_width(2)))
            .map_err(chart_error)?;
        chart
            .draw_series(points.iter().map(|p| {
                let color = if p.highlighted { PALETTE[1] } else { GREY };
                EmptyElement::at((p.x, p.y))
                    + Circle::new((0, 0), 5, color.filled())
                    + Text::new(
                        p.label.clone(),
                        (8, -14),
                        ("sans-serif", 12).into_font().color(&color),
                    )
            }))
            .map_err(chart_error)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_titles_and_labels_as_text() {
        let series = [Series {
            name: "p99".into(),
            color: PALETTE[0],
            points: vec![(0.0, 1.0), (1.0, 3.0)],
        }];
        let svg = lines("Latency over time", ("s", "ms"), &series, XScale::Linear).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("Latency over time") && svg.contains("<polyline"));
        let svg = bars("Batch sizes", ("size", "batches"), &[("1".into(), 3.0)]).unwrap();
        assert!(svg.contains("<rect"));
        let points = [
            Point {
                x: 1.0,
                y: 2.0,
                label: "edge tpu".into(),
                highlighted: true,
            },
            Point {
                x: 2.0,
                y: 1.0,
                label: "cpu".into(),
                highlighted: false,
            },
        ];
        let svg = scatter("Pareto", ("ms", "samples/s"), &points).unwrap();
        assert!(svg.contains("edge tpu") && svg.contains("<circle"));
        // Empty input still draws the axes.
        assert!(ranges("Histogram", ("ms", "samples"), &[], XScale::Log).is_ok());
        assert_eq!(
            (
                significant(0.01234),
                significant(12.34),
                significant(12345.0)
            ),
            (
                "0.0123".to_string(),
                "12.3".to_string(),
                "12345".to_string()
            )
        );
    }
}
