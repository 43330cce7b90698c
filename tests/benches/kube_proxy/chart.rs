//! The SVG chart beside the table: new connections/s and p99 latency by
//! mode and Service count, the direct path marked. It is drawn from the
//! markdown table itself, so chart and table cannot disagree and a chart
//! can be drawn again without a run (`--redraw`). Its text is SVG <text>
//! (no font files): title, axis names, tick labels and legend read without
//! the markdown.
//!
//! Standalone (plotters and `Mode` only): tests/tests/kube_proxy_chart.rs
//! includes this file.
use std::collections::BTreeMap;

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use tests::kube_proxy::modes::Mode;

/// One mode at one Service count: the heights of its two bars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub conn_per_s: f64,
    pub p99_ms: f64,
}

/// What the chart shows: the medians of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub rounds: usize,
    pub quick: bool,
    /// New connections/s with no translation at all.
    pub direct_conn_per_s: f64,
    /// Service count → mode → its bars.
    pub bars: BTreeMap<u32, BTreeMap<Mode, Bar>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("kube-proxy.md: {0}")]
    Table(String),
    #[error("drawing the chart: {0}")]
    Draw(String),
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 560;
const FONT: &str = "sans-serif";

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::SvcLb => RGBColor(31, 119, 180),
        Mode::SvcLbDsr => RGBColor(148, 103, 189),
        Mode::Iptables => RGBColor(255, 127, 14),
        Mode::IptablesNft => RGBColor(214, 39, 40),
        Mode::Nftables => RGBColor(44, 160, 44),
        Mode::Direct => BLACK,
    }
}

/// 10000 → "10 000", as the README writes counts.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// A tick value in ms: no decimals where it has none.
fn milliseconds(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

impl Chart {
    /// The figures of the markdown report.rs writes: its first line
    /// (rounds, quick), the direct path and the first table's `Services`,
    /// `mode`, `conn/s` and `p99 ms` columns (medians, before the spread).
    pub fn from_markdown(text: &str) -> Result<Self, ChartError> {
        let missing = |what: &str| ChartError::Table(format!("no {what}"));
        let produced = text
            .lines()
            .find(|line| line.starts_with("Produced by "))
            .ok_or_else(|| missing("`Produced by` line"))?;
        let rounds = produced
            .split_once("` (")
            .and_then(|(_, rest)| rest.split_once(" round"))
            .and_then(|(count, _)| count.parse().ok())
            .ok_or_else(|| missing("round count in the `Produced by` line"))?;
        let direct_conn_per_s = text
            .lines()
            .find_map(|line| line.strip_prefix("Direct path: **"))
            .and_then(|rest| rest.split_once(" conn/s**"))
            .and_then(|(value, _)| value.parse().ok())
            .ok_or_else(|| missing("`Direct path: **N conn/s**` line"))?;
        let mut lines = text
            .lines()
            .skip_while(|line| !line.starts_with("| Services | mode | conn/s |"));
        let header: Vec<&str> = lines
            .next()
            .ok_or_else(|| missing("table of conn/s by mode"))?
            .split('|')
            .map(str::trim)
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|cell| *cell == name)
                .ok_or_else(|| missing(&format!("`{name}` column")))
        };
        let (size_at, mode_at) = (column("Services")?, column("mode")?);
        let (conn_at, p99_at) = (column("conn/s")?, column("p99 ms")?);
        let mut bars: BTreeMap<u32, BTreeMap<Mode, Bar>> = BTreeMap::new();
        for row in lines
            .skip_while(|line| line.starts_with("|--"))
            .take_while(|line| line.starts_with('|'))
        {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let bad = || ChartError::Table(format!("row {row:?}"));
            // A median, before its [min-max] spread.
            let median = |at: usize| -> Result<f64, ChartError> {
                cells
                    .get(at)
                    .and_then(|cell| cell.split_whitespace().next())
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(bad)
            };
            let size = cells
                .get(size_at)
                .and_then(|cell| cell.parse().ok())
                .ok_or_else(bad)?;
            let mode = Mode::ALL
                .into_iter()
                .find(|mode| cells.get(mode_at) == Some(&mode.key()))
                .ok_or_else(bad)?;
            let bar = Bar {
                conn_per_s: median(conn_at)?,
                p99_ms: median(p99_at)?,
            };
            bars.entry(size).or_default().insert(mode, bar);
        }
        if bars.is_empty() {
            return Err(missing("rows in the table of conn/s by mode"));
        }
        Ok(Self {
            rounds,
            quick: produced.contains("--quick`"),
            direct_conn_per_s,
            bars,
        })
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String, ChartError> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root)
                .and_then(|()| root.present())
                .map_err(|e| ChartError::Draw(e.to_string()))?;
        }
        Ok(out)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let title = format!(
            "svc-lb vs kube-proxy: external client to a NodePort, one HTTP request per connection ({}medians of {} round{})",
            if self.quick { "quick run, " } else { "" },
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
        );
        let body = root.titled(&title, (FONT, 22))?;
        let (panels, legend) = body.split_vertically(body.dim_in_pixel().1 - 44);
        let (left, right) = panels.split_horizontally(WIDTH / 2);
        let conn_max = self
            .bars
            .values()
            .flat_map(|modes| modes.values().map(|bar| bar.conn_per_s))
            .fold(self.direct_conn_per_s, f64::max);
        self.panel(
            &left,
            "New connections per second (higher is better)",
            "new connections/s",
            |bar| bar.conn_per_s,
            conn_max * 1.15,
            &|value| grouped(*value),
            Some(self.direct_conn_per_s),
        )?;
        let p99_max = self
            .bars
            .values()
            .flat_map(|modes| modes.values().map(|bar| bar.p99_ms))
            .fold(1.0, f64::max);
        self.panel(
            &right,
            "p99 latency, connect() to last byte (lower is better)",
            "p99 latency (ms)",
            |bar| bar.p99_ms,
            p99_max * 1.15,
            &|value| milliseconds(*value),
            None,
        )?;
        self.legend(&legend)
    }

    #[allow(clippy::too_many_arguments, reason = "one call per panel")]
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        y_name: &str,
        pick: fn(&Bar) -> f64,
        max: f64,
        y_tick: &dyn Fn(&f64) -> String,
        direct: Option<f64>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let sizes: Vec<u32> = self.bars.keys().copied().collect();
        // Group g spans [g, g + 1) * GROUP; its tick (the Service count)
        // sits in the middle. Integer x: plotters formats the ticks of
        // an integer axis with key points bound (not of an f64 one).
        const GROUP: i32 = 1000;
        let groups = sizes.len() as i32 * GROUP;
        let centers: Vec<i32> = (0..sizes.len() as i32)
            .map(|g| g * GROUP + GROUP / 2)
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 17))
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(72)
            .build_cartesian_2d((0..groups).with_key_points(centers), 0.0..max)?;
        let size_label = |x: &i32| {
            usize::try_from(x / GROUP)
                .ok()
                .and_then(|g| sizes.get(g))
                .map_or_else(String::new, |size| grouped(f64::from(*size)))
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("number of Services")
            .y_desc(y_name)
            .x_label_formatter(&size_label)
            .y_label_formatter(y_tick)
            .y_labels(8)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        // The bars take the middle 80% of a group.
        let modes = self.bar_modes();
        let width = GROUP * 8 / 10 / modes.len().max(1) as i32;
        for (b, mode) in modes.into_iter().enumerate() {
            let left = GROUP / 10 + b as i32 * width;
            chart.draw_series(self.bars.values().zip(0..).filter_map(|(modes, g)| {
                let x = g * GROUP + left;
                modes.get(&mode).map(|bar| {
                    Rectangle::new(
                        [(x, 0.0), (x + width * 85 / 100, pick(bar))],
                        color(mode).filled(),
                    )
                })
            }))?;
        }
        if let Some(value) = direct {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(0, value), (groups, value)],
                BLACK.stroke_width(2),
            )))?;
            let style =
                TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Bottom));
            chart.draw_series(std::iter::once(Text::new(
                format!("direct path (no translation): {} conn/s", grouped(value)),
                (GROUP / 40, value * 1.01),
                style,
            )))?;
        }
        Ok(())
    }

    /// The modes drawn as bars (those the table has figures of), in
    /// legend order.
    fn bar_modes(&self) -> Vec<Mode> {
        Mode::ALL
            .into_iter()
            .filter(|mode| {
                *mode != Mode::Direct && self.bars.values().any(|bars| bars.contains_key(mode))
            })
            .collect()
    }

    /// One row under both panels: a swatch and the name of every mode,
    /// and the direct path's line.
    fn legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let text_style =
            TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        let entries: Vec<(Mode, &str)> = self
            .bar_modes()
            .into_iter()
            .map(|mode| (mode, mode.label()))
            .chain([(Mode::Direct, "direct path (line, left panel)")])
            .collect();
        let (swatch, gap, spacing) = (14, 6, 32);
        let widths = entries
            .iter()
            .map(|(_, label)| {
                area.estimate_text_size(label, &text_style)
                    .map(|(w, _)| w as i32 + swatch + gap)
            })
            .collect::<Result<Vec<i32>, _>>()?;
        let total: i32 = widths.iter().sum::<i32>() + spacing * (widths.len() as i32 - 1);
        let mut x = (WIDTH as i32 - total).max(0) / 2;
        let y = 12;
        for ((mode, label), width) in entries.iter().zip(widths) {
            if *mode == Mode::Direct {
                area.draw(&PathElement::new(
                    vec![(x, y + swatch / 2), (x + swatch, y + swatch / 2)],
                    BLACK.stroke_width(2),
                ))?;
            } else {
                area.draw(&Rectangle::new(
                    [(x, y), (x + swatch, y + swatch)],
                    color(*mode).filled(),
                ))?;
            }
            area.draw(&Text::new(
                *label,
                (x + swatch + gap, y + swatch / 2),
                text_style.clone(),
            ))?;
            x += width + spacing;
        }
        Ok(())
    }
}
