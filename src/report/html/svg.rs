//! Small hand-made SVG charts for the HTML report: bars (stacked), lines, dashed lines and
//! shaded spans over the timeline's buckets, with a y axis of four gridlines, a time axis and a
//! legend; every bar and point has a `<title>` with its exact value.

use std::fmt::Write as _;

use super::esc;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// Bars, stacked on the other bar series.
    Bars,
    Line,
    Dashed,
    /// A band over the whole height where the value is above 0 (pauses).
    Shade,
}

/// One series: a value per bucket (`None`: no point there).
pub(super) struct Series {
    name: String,
    colour: &'static str,
    mark: Mark,
    values: Vec<Option<f64>>,
}

impl Series {
    pub(super) fn new(
        name: &str,
        colour: &'static str,
        mark: Mark,
        values: Vec<Option<f64>>,
    ) -> Self {
        Series {
            name: name.to_string(),
            colour,
            mark,
            values,
        }
    }

    fn has_data(&self) -> bool {
        self.values.iter().flatten().any(|v| *v > 0.0)
    }
}

/// A chart over the timeline's buckets.
pub(super) struct Chart<'a> {
    pub(super) title: &'a str,
    pub(super) unit: &'a str,
    pub(super) bucket_s: f64,
    pub(super) series: Vec<Series>,
}

impl Chart<'_> {
    pub(super) fn render(&self) -> String {
        let buckets = self
            .series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let top = nice(self.top(buckets));
        let plot_w = WIDTH - LEFT - RIGHT;
        let step = plot_w / buckets as f64;
        let y = |v: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v / top);
        let mut svg = format!(
            "<h3>{} <small>({})</small></h3>{}<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
            esc(self.title),
            esc(self.unit),
            self.legend(),
            esc(self.title)
        );
        self.axes(&mut svg, top, buckets, &y);
        for series in self.series.iter().filter(|s| s.mark == Mark::Shade) {
            for (i, v) in series.values.iter().enumerate() {
                if let Some(v) = v.filter(|v| *v > 0.0) {
                    let _ = write!(
                        svg,
                        "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.25\"><title>{}: {v}</title></rect>",
                        LEFT + i as f64 * step, step, HEIGHT - TOP - BOTTOM, series.colour, esc(&series.name)
                    );
                }
            }
        }
        self.bars(&mut svg, buckets, step, &y);
        for series in self
            .series
            .iter()
            .filter(|s| matches!(s.mark, Mark::Line | Mark::Dashed))
        {
            line(&mut svg, series, step, &y);
        }
        svg.push_str("</svg>");
        svg
    }

    /// The largest value drawn: a stack of bars, or a line's point.
    fn top(&self, buckets: usize) -> f64 {
        (0..buckets)
            .map(|i| {
                let value = |s: &Series| s.values.get(i).copied().flatten().unwrap_or(0.0);
                let stack: f64 = self
                    .series
                    .iter()
                    .filter(|s| s.mark == Mark::Bars)
                    .map(value)
                    .sum();
                let lines = self
                    .series
                    .iter()
                    .filter(|s| matches!(s.mark, Mark::Line | Mark::Dashed))
                    .map(value)
                    .fold(0.0, f64::max);
                stack.max(lines)
            })
            .fold(0.0, f64::max)
    }

    fn legend(&self) -> String {
        let mut legend = String::from("<div class=\"legend\">");
        for series in self.series.iter().filter(|s| s.has_data()) {
            let _ = write!(
                legend,
                "<span><i style=\"background:{}\"></i>{}</span>",
                series.colour,
                esc(&series.name)
            );
        }
        legend.push_str("</div>");
        legend
    }

    /// Gridlines with their values, and the time axis (time from the start).
    fn axes(&self, svg: &mut String, top: f64, buckets: usize, y: &dyn Fn(f64) -> f64) {
        for k in 0..=4 {
            let v = top * f64::from(k) / 4.0;
            let _ = write!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y(v) + 4.0,
                short(v),
                y = y(v)
            );
        }
        let span = buckets as f64 * self.bucket_s;
        for k in 0..=5 {
            let t = span * f64::from(k) / 5.0;
            let x = LEFT + (WIDTH - LEFT - RIGHT) * f64::from(k) / 5.0;
            let anchor = match k {
                0 => "start",
                5 => "end",
                _ => "middle",
            };
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                HEIGHT - 8.0,
                elapsed(t)
            );
        }
    }

    /// The bar series, stacked in order.
    fn bars(&self, svg: &mut String, buckets: usize, step: f64, y: &dyn Fn(f64) -> f64) {
        let bars: Vec<&Series> = self
            .series
            .iter()
            .filter(|s| s.mark == Mark::Bars)
            .collect();
        for i in 0..buckets {
            let mut base = 0.0;
            for series in &bars {
                let Some(v) = series.values.get(i).copied().flatten().filter(|v| *v > 0.0) else {
                    continue;
                };
                let (y0, y1) = (y(base), y(base + v));
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                    LEFT + i as f64 * step + step * 0.1,
                    step * 0.8,
                    (y0 - y1).max(0.5),
                    series.colour,
                    esc(&series.name),
                    short(v)
                );
                base += v;
            }
        }
    }
}

/// A line through the points a series has (a gap where it has none).
fn line(svg: &mut String, series: &Series, step: f64, y: &dyn Fn(f64) -> f64) {
    let dash = if series.mark == Mark::Dashed {
        " stroke-dasharray=\"6 4\""
    } else {
        ""
    };
    let mut points: Vec<String> = Vec::new();
    let flush = |svg: &mut String, points: &mut Vec<String>| {
        if points.len() > 1 {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"><title>{}</title></polyline>",
                series.colour,
                points.join(" "),
                esc(&series.name)
            );
        } else if let Some(point) = points.first() {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{}\"/>",
                series.colour
            );
        }
        points.clear();
    };
    for (i, value) in series.values.iter().enumerate() {
        match value {
            Some(v) => points.push(format!(
                "{:.1},{:.1}",
                LEFT + (i as f64 + 0.5) * step,
                y(*v)
            )),
            None => flush(svg, &mut points),
        }
    }
    flush(svg, &mut points);
}

/// A small bar chart of a token histogram.
pub(super) fn histogram(kind: &str, bins: &[String], counts: &[u64], colour: &str) -> String {
    let (w, h, pad) = (300.0, 150.0, 20.0);
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = w / counts.len().max(1) as f64;
    let mut svg = format!(
        "<div><h3>{kind}</h3><svg viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"{kind} tokens\">",
        h + pad
    );
    for (i, (&n, bin)) in counts.iter().zip(bins).enumerate() {
        let bar = (h - 10.0) * n as f64 / top;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"{colour}\"><title>{} tokens: {n} records</title></rect>",
            i as f64 * step + 1.0,
            h - bar,
            (step - 2.0).max(1.0),
            esc(bin)
        );
    }
    if let (Some(first), Some(last)) = (bins.first(), bins.last()) {
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text><text x=\"{w}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            h + 14.0,
            esc(first),
            h + 14.0,
            esc(last)
        );
    }
    svg.push_str("</svg></div>");
    svg
}

/// The axis' top: the smallest of 1, 2, 2.5, 5 × 10^k (so four gridlines fall on round values)
/// at or above `max`.
fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|top| *top >= max * (1.0 - 1e-12))
        .unwrap_or(10.0 * power)
}

/// A number for an axis or a tooltip: 1.2k, 3.4M, or up to 3 decimals.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Seconds from the start, for the time axis: `45s`, `12m`, `3h20m`, `2d4h`.
fn elapsed(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_top_out_at_round_values() {
        assert_eq!(nice(5729.175 * 4.0 / 3.0), 10_000.0);
        assert_eq!(nice(8171.906), 10_000.0);
        assert_eq!(nice(2190.0), 2500.0);
        assert_eq!(nice(0.0004), 0.0005);
        assert_eq!(nice(100.0), 100.0);
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(short(2500.0), "2500");
        assert_eq!(short(12_500.0), "12.5k");
    }
}
