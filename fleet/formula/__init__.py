"""The Azure Batch autoscale formula language: parse and evaluate, without eval, I/O or clock.

    from fleet.formula import parse, evaluate
    formula = parse("$TargetDedicatedNodes = min(10, avg($PendingTasks.GetSample(1)));")
    outcome = evaluate(formula, {"$PendingTasks": [(t0, 4.0), (t1, 6.0)]}, now)
    outcome.target_dedicated_nodes, outcome.results

``parse`` raises ``fleet.errors.BadInput`` with code ``InvalidAutoScaleFormula`` and
``evaluate`` with code ``AutoScaleFormulaEvaluationError``; both use field
``autoScaleFormula``, start the message with ``line L, column C:`` (1-based) and put
``line`` and ``column`` in ``details``.

What fleet follows from Azure's documentation: statements separated by ``;``, ``//``
comments, the types double, doubleVec, doubleVecList (function arguments), string,
timestamp and timeinterval with Azure's operation table (see operators.py), the
``TimeInterval_*`` constants, the functions Azure lists (see functions.py), the sample
methods (see samples.py), ``$TargetDedicated``/``$TargetLowPriority`` as aliases where the
full name wins, at most 8 KB and 100 statements, results text such as
``$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$x=1``
(service targets first, then user variables sorted by name), and fractional targets
truncated (2.9 nodes is 2, as Azure support confirms), then clamped at 0.

Where Azure's documentation is silent, fleet chose:

- Statements: a line break also ends a statement when the next line cannot continue the
  expression (``a = 1`` newline ``b = 2``); an expression that can continue does
  (``a = 1`` newline ``- 2`` is ``a = 1 - 2``). Empty statements are allowed; a bare
  expression is a statement too (``stop();``). ``/* */`` comments work as well as ``//``.
- Precedence is C's: ``?:`` < ``||`` < ``&&`` < ``== !=`` < ``< <= > >=`` < ``+ -`` <
  ``* /`` < unary ``- !`` < call and ``.``; binary operators associate left, ``?:`` right.
  ``&&``, ``||`` and ``?:`` evaluate only what decides the result.
- Literals: numbers ``12``, ``1.5``, ``2e3`` (no leading ``.``; a negative number is unary
  minus); strings in double quotes with escapes ``\\"``, ``\\\\``, ``\\n``, ``\\t``. No
  vector literal: doubleVecs come from GetSample and from arithmetic on them.
- Names: the ``$`` is part of a name, so ``x`` and ``$x`` are two user variables (Azure
  calls the ``$`` optional for user variables). The results show names as written.
  Assigning a read-only service variable or a constant is a parse error. The bare words
  ``requeue``, ``terminate``, ``taskcompletion`` and ``retaineddata`` are strings.
- Operators beyond Azure's table: ``double op doubleVec`` (the mirror of the listed
  ``doubleVec op double``) and ``timestamp - timeinterval``. Dividing by zero (a double, a
  vector element or a timeinterval) is an evaluation error, never infinity. doubleVec op
  doubleVec needs equal lengths. A sampled variable used as a plain value (``$PendingTasks
  / 2``) is its most recent sample, an error when it has none.
- Sampled variables take a sample every 30 s (``GetSamplePeriod()``). ``GetSample(n)``
  returns the n newest samples, newest first, and fewer (even none) when the history is
  shorter. ``GetSample(start[, end][, percent])`` takes timeintervals (counting back from
  ``now``) or timestamps, in either order, and returns the samples taken after the earlier
  and at or before the later bound, newest first. The percent of a window is the samples
  found over the whole 30 s periods in it (at least 1), capped at 100; a window of no length
  is 100%. With no percent GetSample never fails for want of samples. Samples later than
  ``now`` are ignored. ``Count()`` counts the samples, ``HistoryBeginTime()`` is the oldest
  sample's time (an error when there is none), ``GetSamplePercent`` returns a double.
- Functions: ``percentile(v, p)`` is nearest-rank (p from 0 to 100; ``p = 0`` is the
  smallest); ``std`` is the sample deviation (n - 1), 0 for one value; ``avg``, ``min``,
  ``max``, ``range`` and ``percentile`` of nothing are errors, while ``sum``, ``norm`` and
  ``len`` of nothing are 0; ``lg``/``ln``/``log`` of a number <= 0 are errors; ``round``
  rounds halves away from zero; ``val(v, i)`` needs a whole index inside ``v``.
  ``histogram(v, bins)`` is fleet's own (Azure lists no histogram): the counts of ``v`` in
  ``bins`` equal-width bins from min(v) to max(v), the top value in the last bin.
  ``time(s)`` takes W3C-DTF (a missing zone is UTC) or RFC 1123. ``stop()`` ends the
  evaluation; what was assigned before it stands. ``rand()`` draws from the ``rng`` given
  to ``evaluate``.
- Timestamps are UTC with members year, month, day, weekday (0 Sunday to 6 Saturday, as
  .NET numbers them, so Monday is 1), hour, minute, second. Results print a timestamp as
  ``2016-10-13T19:18:47.805Z``, a timeinterval as .NET prints a TimeSpan
  (``00:10:00``), a doubleVec as ``[1,2,3]``.
- Inputs: a service variable not given starts at its default (0 nodes, 1 task slot per
  node, an empty sample history); ``$TargetDedicatedNodes`` and ``$TargetLowPriorityNodes``
  start at the given value, else at the current node counts. ``node_deallocation_option`` is
  None when neither the formula nor the inputs set it, while the results show Azure's
  default, ``requeue``. A target must end up a finite double.
- Limits that keep any input cheap: parentheses, unary operators, ``?:`` and arguments nest
  at most 64 deep, an expression's tree is at most 150 operations deep (``1 + 1 + ...``
  counts each ``+``), histograms have at most 10,000 bins, timestamps stay within the years
  1 to 9999. Errors point at the operator, call or ``.`` where evaluation failed.
"""

from __future__ import annotations

from fleet.formula.evaluator import EVALUATION_ERROR, Evaluation, Input, evaluate
from fleet.formula.lexer import PARSE_ERROR
from fleet.formula.parser import parse
from fleet.formula.printer import format_formula
from fleet.formula.syntax import Formula
from fleet.formula.values import (
    DoubleVec,
    SampledVariable,
    TimeInterval,
    Timestamp,
    format_value,
)

__all__ = [
    "EVALUATION_ERROR",
    "PARSE_ERROR",
    "DoubleVec",
    "Evaluation",
    "Formula",
    "Input",
    "SampledVariable",
    "TimeInterval",
    "Timestamp",
    "evaluate",
    "format_formula",
    "format_value",
    "parse",
]
