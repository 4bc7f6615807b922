//! The chart: throughput per workload with the peers side by side (log scale), and reopen
//! times below it.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::peers::{Mode, Peer};
use crate::report::{key, series};
use crate::{Results, RunInfo};

/// The bar series: the stores, then one colour for whichever physical limit applies.
const SERIES: [(&str, RGBColor); 7] = [
    ("resilient-kv", RGBColor(214, 39, 40)),
    ("LMDB (heed)", RGBColor(31, 119, 180)),
    ("redb", RGBColor(255, 127, 14)),
    ("fjall", RGBColor(44, 160, 44)),
    ("SQLite", RGBColor(148, 103, 189)),
    ("mmkv (other core idle)", RGBColor(140, 86, 75)),
    (
        "limit: HashMap (W3) / mmap append (writes)",
        RGBColor(127, 127, 127),
    ),
];

/// The peer drawn as series `i` in a group, given the group's limit.
fn series_peer(i: usize, limit: Peer) -> Peer {
    [
        Peer::ResilientKv,
        Peer::Heed,
        Peer::Redb,
        Peer::Fjall,
        Peer::Sqlite,
        Peer::Mmkv,
        limit,
    ][i]
}

/// A group of bars: label, workload, mode, which limit applies, and how to read the figure.
struct Group {
    label: &'static str,
    workload: &'static str,
    mode: Mode,
    limit: Peer,
}

const GROUPS: [Group; 7] = [
    Group {
        label: "W1 insert (a)",
        workload: "W1",
        mode: Mode::Process,
        limit: Peer::MmapAppend,
    },
    Group {
        label: "W1 insert (b)",
        workload: "W1",
        mode: Mode::Power,
        limit: Peer::MmapAppend,
    },
    Group {
        label: "W2 overwrite (a)",
        workload: "W2",
        mode: Mode::Process,
        limit: Peer::MmapAppend,
    },
    Group {
        label: "W2 overwrite (b)",
        workload: "W2",
        mode: Mode::Power,
        limit: Peer::MmapAppend,
    },
    Group {
        label: "W3 get, 1 thread",
        workload: "W3x1",
        mode: Mode::Process,
        limit: Peer::HashMap,
    },
    Group {
        label: "W3 get, 2 threads",
        workload: "W3x2",
        mode: Mode::Process,
        limit: Peer::HashMap,
    },
    Group {
        label: "W5 4 writers (b)",
        workload: "W5",
        mode: Mode::Power,
        limit: Peer::MmapAppend,
    },
];

/// A value for series `i` of a group, or `None` (no such mode, not measured, failed).
fn value(
    results: &Results,
    g: &Group,
    i: usize,
    f: impl Fn(&crate::report::Series) -> f64,
) -> Option<f64> {
    let peer = series_peer(i, g.limit);
    if g.mode == Mode::Process
        && !peer.has_true_mode_a()
        && !g.workload.starts_with("W3")
        && !g.workload.starts_with("W4")
    {
        return None;
    }
    let v = f(&series(results, key(peer, g.mode), g.workload)?);
    (v.is_finite() && v > 0.0).then_some(v)
}

/// The decade at or below `v`, and at or above `w`.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64
            .powf(hi.log10().ceil())
            .max(10f64.powf(lo.log10().floor() + 1.0)),
    )
}

/// Draws bars for `groups` into `area`, on a log axis: group `g` spans `g..g + 1` on x.
fn bars(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    results: &Results,
    caption: &str,
    y_desc: &str,
    groups: &[&Group],
    f: &dyn Fn(&crate::report::Series) -> f64,
    series_count: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let all = groups
        .iter()
        .flat_map(|g| (0..series_count).filter_map(|i| value(results, g, i, f)));
    let (lo, hi) = decades(all);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups.len() as f64, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .y_label_formatter(&|v| crate::report::fmt_ops(*v).replace(' ', ""))
        .draw()
        .map_err(|e| e.to_string())?;
    // Group labels under the axis, centred on each group (in the area's own pixels).
    let base = area.get_base_pixel();
    let label_style = ("sans-serif", 15)
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (gi, g) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(gi as f64 + 0.5, lo));
        area.draw_text(g.label, &label_style, (px - base.0, py - base.1 + 8))
            .map_err(|e| e.to_string())?;
    }
    let width = 0.84 / series_count as f64;
    for (i, &(_, color)) in SERIES.iter().enumerate().take(series_count) {
        let rects = groups.iter().enumerate().filter_map(|(gi, g)| {
            let v = value(results, g, i, f)?;
            let left = gi as f64 + 0.08 + i as f64 * width;
            Some(Rectangle::new(
                [(left, lo), (left + width * 0.9, v)],
                color.filled(),
            ))
        });
        chart.draw_series(rects).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws the chart into `path` (SVG).
pub fn draw(
    results: &Results,
    info: &RunInfo,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = SVGBackend::new(path, (1280, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title, rest) = root.split_vertically(40);
    title
        .draw_text(
            &format!(
                "resilient-kv and peers, {} ({} run(s), medians){}",
                info.date,
                info.runs,
                if info.quick { ", --quick counts" } else { "" }
            ),
            &("sans-serif", 22).into_text_style(&title),
            (20, 10),
        )
        .map_err(|e| e.to_string())?;
    let (top, bottom) = rest.split_vertically(520);
    let (bottom, legend) = bottom.split_horizontally(560);
    let groups: Vec<&Group> = GROUPS.iter().collect();
    bars(
        &top,
        results,
        "Throughput per workload (log scale; higher is better)",
        "ops/s",
        &groups,
        &|s| s.ops(),
        SERIES.len(),
    )?;
    let reopen = [
        Group {
            label: "after W1",
            workload: "W4w1",
            mode: Mode::Process,
            limit: Peer::HashMap,
        },
        Group {
            label: "after W2",
            workload: "W4w2",
            mode: Mode::Process,
            limit: Peer::HashMap,
        },
    ];
    let reopen_groups: Vec<&Group> = reopen.iter().collect();
    bars(
        &bottom,
        results,
        "W4 reopen, close to first get (log; lower is better)",
        "reopens/s (1 / time)",
        &reopen_groups,
        &|s| 1e9 / s.median("ns"),
        SERIES.len() - 1,
    )?;
    // Legend.
    let style = ("sans-serif", 16).into_text_style(&legend);
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let y = 60 + i as i32 * 30;
        legend
            .draw(&Rectangle::new([(30, y), (50, y + 16)], color.filled()))
            .map_err(|e| e.to_string())?;
        legend
            .draw_text(name, &style, (60, y))
            .map_err(|e| e.to_string())?;
    }
    legend
        .draw_text(
            "(a) survives a process kill; (b) survives power loss.",
            &style,
            (30, 60 + SERIES.len() as i32 * 30 + 10),
        )
        .map_err(|e| e.to_string())?;
    legend
        .draw_text(
            "redb has no mode (a); missing bars: not measured.",
            &style,
            (30, 60 + SERIES.len() as i32 * 30 + 34),
        )
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
