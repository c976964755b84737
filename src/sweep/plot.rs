//! A metric of a sweep as an SVG: the columns along x, one series per row, each point the mean
//! over seeds with an error bar of one standard deviation (series are nudged apart so their
//! bars do not hide each other).

use plotters::prelude::*;

use super::spec::{Metric, Spec};
use super::table::Group;

/// The SVG of `metric`'s groups.
///
/// # Errors
/// plotters' drawing error.
pub fn draw(spec: &Spec, metric: &Metric, groups: &[Group]) -> Result<String, DrawingAreaErrorKind<std::io::Error>> {
    let mine: Vec<&Group> = groups.iter().filter(|g| g.metric == metric.name && !g.excluded && g.mean.is_some()).collect();
    let mut columns: Vec<&Vec<String>> = Vec::new();
    let mut rows: Vec<&Vec<String>> = Vec::new();
    for g in groups.iter().filter(|g| g.metric == metric.name) {
        if !columns.contains(&&g.column) {
            columns.push(&g.column);
        }
        if !rows.contains(&&g.row) {
            rows.push(&g.row);
        }
    }
    let lo = mine.iter().map(|g| (g.mean.unwrap_or(0.0) - g.sd.unwrap_or(0.0)) * metric.scale).fold(f64::MAX, f64::min);
    let hi = mine.iter().map(|g| (g.mean.unwrap_or(0.0) + g.sd.unwrap_or(0.0)) * metric.scale).fold(f64::MIN, f64::max);
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-6);
    // Room above the data for the legend (a line per row), so it never hides a point.
    let legend_room = (hi - lo).max(1e-6) * 0.09 * rows.len() as f64;
    let name = |labels: &[String], axes: &[String]| if labels.is_empty() { metric.label.clone() } else { axes.iter().zip(labels).map(|(a, l)| format!("{a} = {l}")).collect::<Vec<_>>().join(", ") };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = format!("{}: {}", spec.name, metric.label);
        let k = columns.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .margin_right(30)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..(k - 0.5), (lo - pad)..(hi + pad + legend_room))?;
        let column_names: Vec<String> = columns.iter().map(|c| name(c, &spec.columns)).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(columns.len().max(1))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 { column_names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
            })
            .y_desc(format!("{}{} (mean ± sd over {} seed(s))", metric.label, if metric.scale == 100.0 { " %" } else { "" }, spec.seeds.len()))
            .draw()?;
        let n = rows.len().max(1) as f64;
        for (ri, row) in rows.iter().enumerate() {
            let color = Palette99::pick(ri).to_rgba();
            let dx = if n > 1.0 { (ri as f64 / (n - 1.0) - 0.5) * 0.3 } else { 0.0 };
            let pts: Vec<(f64, f64, f64)> = columns
                .iter()
                .enumerate()
                .filter_map(|(ci, c)| mine.iter().find(|g| &g.row == *row && &g.column == *c).map(|g| (ci as f64 + dx, g.mean.unwrap_or(0.0) * metric.scale, g.sd.unwrap_or(0.0) * metric.scale)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
                .label(name(row, &spec.rows))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))?;
            for &(x, y, sd) in &pts {
                let cap = 0.04;
                chart.draw_series(std::iter::once(PathElement::new(vec![(x, y - sd), (x, y + sd)], color.stroke_width(1))))?;
                chart.draw_series([y - sd, y + sd].map(|yy| PathElement::new(vec![(x - cap, yy), (x + cap, yy)], color.stroke_width(1))))?;
            }
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(svg)
}
