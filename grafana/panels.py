"""Small builders over grafana-foundation-sdk for labq's dashboards.

Every panel queries the dashboard's `${datasource}` variable (type datasource, Prometheus), so
the dashboards work with whatever Prometheus a lab provisions; none uses `__inputs`. Every
coordinator serves the same store-built series, so exprs deduplicate them with `max without
(instance)` (see `one`) before summing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as m
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = m.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The uid grafana/provisioning/datasources/labq.yaml gives the Prometheus datasource.
PROVISIONED_UID = "labq-prometheus"
ALL = ".*"  # what Grafana puts in `$var` when "All" is picked (allValue)


def one(expr: str) -> str:
    """`expr` once, whichever coordinator served it (all serve the same store-built series)."""
    return f"max without (instance) ({expr})"


@dataclass
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class Look:
    """How a panel shows its numbers."""

    unit: str = "short"
    min: float | None = None
    max: float | None = None
    decimals: float | None = None
    steps: Sequence[tuple[float | None, str]] = ()  # thresholds (None = base)
    mappings: dict[str, tuple[str, str]] = field(default_factory=dict)  # value -> (text, color)


def _targets(queries: Sequence[Query]) -> list[Builder[object]]:
    out: list[Builder[object]] = []
    for i, q in enumerate(queries):
        t = prom.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        t = t.instant() if q.instant else t.range()
        if q.legend:
            t = t.legend_format(q.legend)
        if q.table:
            t = t.format(PromQueryFormat.TABLE)
        out.append(t)
    return out


def _styled(panel: Any, title: str, description: str, queries: Sequence[Query], look: Look,
            w: int, h: int) -> Any:
    """Title, queries and field config: methods every panel builder has, untyped in common."""
    panel = (panel.title(title).datasource(DATASOURCE)
             .targets(_targets(queries)).unit(look.unit).span(w).height(h))
    if description:
        panel = panel.description(description)
    if look.min is not None:
        panel = panel.min(look.min)
    if look.max is not None:
        panel = panel.max(look.max)
    if look.decimals is not None:
        panel = panel.decimals(look.decimals)
    steps = look.steps or ((None, "green"),)
    panel = panel.thresholds(db.ThresholdsConfig().mode(m.ThresholdsMode.ABSOLUTE).steps(
        [m.Threshold(value=v, color=c) for v, c in steps]))
    if look.mappings:
        panel = panel.mappings([m.ValueMap(options={
            k: m.ValueMappingResult(text=t, color=c, index=i)
            for i, (k, (t, c)) in enumerate(look.mappings.items())})])
    return panel


def graph(title: str, description: str, queries: Sequence[Query], look: Look | None = None,
          *, stacked: bool = False, w: int = 12, h: int = 8) -> Builder[m.Panel]:
    panel = timeseries.Panel().line_width(1).fill_opacity(10 if not stacked else 40)
    if stacked:
        panel = panel.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    return _styled(panel, title, description, queries, look or Look(), w, h)


def single(title: str, description: str, query: Query, look: Look | None = None,
           *, w: int = 4, h: int = 4) -> Builder[m.Panel]:
    panel = (stat.Panel().graph_mode(common.BigValueGraphMode.AREA)
             .color_mode(common.BigValueColorMode.VALUE))
    return _styled(panel, title, description, [query], look or Look(), w, h)


def bars(title: str, description: str, query: Query, look: Look | None = None,
         *, w: int = 12, h: int = 8) -> Builder[m.Panel]:
    panel = (bargauge.Panel().display_mode(common.BarGaugeDisplayMode.GRADIENT)
             .orientation(common.VizOrientation.HORIZONTAL))
    return _styled(panel, title, description, [query], look or Look(), w, h)


def grid(title: str, description: str, queries: Sequence[Query], look: Look | None = None,
         *, w: int = 24, h: int = 8, organize: dict[str, object] | None = None
         ) -> Builder[m.Panel]:
    """A table of instant queries joined on their labels (one row per label set)."""
    panel = table.Panel().filterable(True)
    panel = panel.with_transformation(m.DataTransformerConfig(id_val="merge", options={}))
    if organize:
        panel = panel.with_transformation(
            m.DataTransformerConfig(id_val="organize", options=organize))
    tabled = [Query(q.expr, q.legend, instant=True, table=True) for q in queries]
    return _styled(panel, title, description, tabled, look or Look(), w, h)


def buckets(title: str, description: str, expr: str, unit: str,
            *, w: int = 12, h: int = 8) -> Builder[m.Panel]:
    """A heatmap of a histogram's `_bucket` series (rate per bucket, Grafana sorts `le`)."""
    target = (prom.Dataquery().expr(expr).ref_id("A").datasource(DATASOURCE).range()
              .format(PromQueryFormat.HEATMAP).legend_format("{{le}}"))
    panel = (heatmap.Panel().title(title).description(description).datasource(DATASOURCE)
             .with_target(target).span(w).height(h).calculate(False)
             .y_axis(heatmap.YAxisConfig().unit(unit))
             .color(heatmap.HeatmapColorOptions().scheme("Oranges").mode(HeatmapColorMode.SCHEME)))
    return panel


def datasource_variable() -> Builder[m.VariableModel]:
    return (db.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(m.VariableOption(text="labq Prometheus", value=PROVISIONED_UID)))


def label_variable(name: str, label: str, metric: str) -> Builder[m.VariableModel]:
    """A multi-select of `label` values of `metric`, "All" by default."""
    return (db.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query(f"label_values({metric}, {name})")
            .refresh(m.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(m.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(ALL)
            .current(m.VariableOption(text="All", value="$__all")))


@dataclass
class Row:
    title: str
    panels: list[Builder[m.Panel]]


def board(uid: str, title: str, description: str, rows: Sequence[Row],
          variables: Sequence[Builder[m.VariableModel]] = ()) -> m.Dashboard:
    """A dashboard of rows; panel ids are assigned in order so the JSON is stable."""
    d = (db.Dashboard(title).uid(uid).description(description).tags(["labq"])
         .time("now-6h", "now").refresh("30s").timezone("browser").editable()
         .tooltip(m.DashboardCursorSync.CROSSHAIR)
         .with_variable(datasource_variable()))
    for variable in variables:
        d = d.with_variable(variable)
    next_id = 1
    for row in rows:
        d = d.with_row(db.Row(row.title).id(next_id))
        next_id += 1
        for panel in row.panels:
            d = d.with_panel(panel.id(next_id))  # type: ignore[attr-defined]
            next_id += 1
    return d.build()
