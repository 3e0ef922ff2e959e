"""``fleet pool autoscale enable|disable|evaluate``: Azure Batch autoscale formulas."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fleet import reads, views
from fleet.cli.common import CURRENT, OutputOpt, emit, lazy_module, read_text
from fleet.errors import BadInput

if TYPE_CHECKING:
    from fleet.service import autoscale as service
else:
    service = lazy_module("fleet.service.autoscale")

autoscale_app = typer.Typer(help="Grow and shrink a pool by a formula.", no_args_is_help=True)

FormulaOpt = Annotated[
    str | None, typer.Option("--formula", help="The autoscale formula (Azure's language).")
]
FormulaFileOpt = Annotated[
    str | None, typer.Option("--formula-file", help="File holding the formula ('-': stdin).")
]


def _formula(formula: str | None, formula_file: str | None) -> str:
    if (formula is None) == (formula_file is None):
        raise BadInput("give exactly one of --formula and --formula-file", field="autoScaleFormula")
    return (
        formula
        if formula is not None
        else read_text(formula_file or "-", code="InvalidAutoScaleFormula")
    )


def _shown(pool_id: str, output: OutputOpt) -> None:
    row, nodes = reads.show_pool(CURRENT.reader, pool_id)
    emit(views.pool(row, nodes), output)


@autoscale_app.command("enable")
def enable(
    pool_id: Annotated[str, typer.Argument(metavar="POOL", help="Pool id.")],
    formula: FormulaOpt = None,
    formula_file: FormulaFileOpt = None,
    interval: Annotated[
        str | None,
        typer.Option(
            "--evaluation-interval",
            help="ISO 8601 duration from PT5S to PT168H (default PT15M, or the pool's).",
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Scale a pool by a formula, evaluated now and then every interval."""
    service.enable(CURRENT.store, pool_id, _formula(formula, formula_file), interval)
    _shown(pool_id, output)


@autoscale_app.command("disable")
def disable(
    pool_id: Annotated[str, typer.Argument(metavar="POOL", help="Pool id.")],
    output: OutputOpt = None,
) -> None:
    """Stop scaling a pool by its formula; it keeps its current target."""
    service.disable(CURRENT.store, pool_id)
    _shown(pool_id, output)


@autoscale_app.command("evaluate")
def evaluate(
    pool_id: Annotated[str, typer.Argument(metavar="POOL", help="Pool id.")],
    formula: FormulaOpt = None,
    formula_file: FormulaFileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Evaluate a formula against the pool now, changing nothing: every variable's value
    and the result (exit 1 when the formula fails)."""
    run = service.evaluate(CURRENT.store, pool_id, _formula(formula, formula_file))
    emit(run, output)
    if "error" in run:
        raise typer.Exit(1)


def register(pool_app: typer.Typer) -> None:
    """Add ``autoscale`` to the ``pool`` group."""
    pool_app.add_typer(autoscale_app, name="autoscale")
