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

/// A round axis number: 0.01, 0.1, 1, 10, 100, 1k, 10k, 100k, 1M, 10M.
fn axis_number(v: f64) -> String {
    let short = |x: f64| {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if v >= 1e6 {
        format!("{}M", short(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", short(v / 1e3))
    } else {
        short(v)
    }
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

/// One panel of bars.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    groups: &'a [&'a Group],
    /// The figure drawn, from a workload's series.
    f: &'a dyn Fn(&crate::report::Series) -> f64,
    /// Labels of the y axis.
    y_label: &'a dyn Fn(&f64) -> String,
    /// How many of [`SERIES`] take part.
    series_count: usize,
}

/// Draws `panel` into `area`, on a log axis: group `g` spans `g..g + 1` on x.
fn bars(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    results: &Results,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Panel {
        caption,
        y_desc,
        groups,
        f,
        y_label,
        series_count,
    } = *panel;
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
        .y_label_formatter(y_label)
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
        &Panel {
            caption: "Throughput per workload (log scale; higher is better)",
            y_desc: "operations per second",
            groups: &groups,
            f: &|s| s.ops(),
            y_label: &|v| axis_number(*v),
            series_count: SERIES.len(),
        },
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
        &Panel {
            caption: "W4 reopen, close to first get (log scale; lower is better)",
            y_desc: "milliseconds",
            groups: &reopen_groups,
            f: &|s| s.median("ns") / 1e6,
            y_label: &|v| {
                if *v >= 1000.0 {
                    format!("{} s", axis_number(*v / 1000.0))
                } else {
                    format!("{} ms", axis_number(*v))
                }
            },
            series_count: SERIES.len() - 1,
        },
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
