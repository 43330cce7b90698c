//! The PNG: grouped bars drawn without text (no system fonts needed), two
//! panels, the legend in the markdown next to it.
use std::path::Path;

use plotters::prelude::*;
use tests::kube_proxy::modes::Mode;

use crate::report::{COMPARED, Summary};

pub const LEGEND: &str = "Chart: left panel new connections/s, right panel p99 latency; one group of bars per Service count (1, 1 000, 10 000 left to right), bars in each group: svc-lb (blue), iptables legacy (orange), iptables nf_tables (red), nftables (green); the black line on the left panel is the direct path; grey lines every 5 000 conn/s (left) and every 1 ms (right).";

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::SvcLb => RGBColor(31, 119, 180),
        Mode::Iptables => RGBColor(255, 127, 14),
        Mode::IptablesNft => RGBColor(214, 39, 40),
        Mode::Nftables => RGBColor(44, 160, 44),
        Mode::Direct => BLACK,
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

pub fn draw(summary: &Summary, path: &Path) -> DrawResult {
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let conn_max = summary
        .by_size
        .values()
        .flat_map(|m| m.values().map(|f| f.conn_per_s.median))
        .fold(summary.direct.conn_per_s.median, f64::max);
    panel(
        &left,
        summary,
        |f| f.conn_per_s.median,
        conn_max * 1.1,
        5000.0,
        Some(summary.direct.conn_per_s.median),
    )?;
    let p99_max = summary
        .by_size
        .values()
        .flat_map(|m| m.values().map(|f| f.p99_ms.median))
        .fold(1.0, f64::max);
    panel(
        &right,
        summary,
        |f| f.p99_ms.median,
        p99_max * 1.1,
        1.0,
        None,
    )?;
    root.present()?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    summary: &Summary,
    pick: fn(&crate::report::Figures) -> f64,
    max: f64,
    grid: f64,
    reference: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let (width, height) = area.dim_in_pixel();
    let (width, height) = (i32::try_from(width)?, i32::try_from(height)?);
    let margin = 30;
    let plot_h = height - 2 * margin;
    let y = |v: f64| height - margin - ((v / max) * f64::from(plot_h)) as i32;
    let mut level = grid;
    while level < max {
        area.draw(&PathElement::new(
            vec![(margin, y(level)), (width - margin, y(level))],
            RGBColor(220, 220, 220),
        ))?;
        level += grid;
    }
    area.draw(&PathElement::new(
        vec![(margin, height - margin), (width - margin, height - margin)],
        BLACK,
    ))?;
    let groups = summary.by_size.len().max(1) as i32;
    let group_w = (width - 2 * margin) / groups;
    let bar_w = group_w / (COMPARED.len() as i32 + 1);
    for (g, modes) in summary.by_size.values().enumerate() {
        let x0 = margin + g as i32 * group_w + bar_w / 2;
        for (b, mode) in COMPARED.iter().enumerate() {
            let Some(f) = modes.get(mode) else { continue };
            let x = x0 + b as i32 * bar_w;
            area.draw(&Rectangle::new(
                [(x, y(pick(f))), (x + bar_w - 4, height - margin)],
                color(*mode).filled(),
            ))?;
        }
    }
    if let Some(value) = reference {
        area.draw(&PathElement::new(
            vec![(margin, y(value)), (width - margin, y(value))],
            BLACK.stroke_width(2),
        ))?;
    }
    Ok(())
}
