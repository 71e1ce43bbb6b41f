"""Error types that the CLI turns into one-line messages and exit codes.

Why a module of its own: every layer (study schema, data discovery, weight loading,
analysis) must be able to say "this input is wrong, here is the fix" without importing
the CLI, and the CLI must be able to tell such errors from bugs, which keep their
traceback.
"""


class DoeSrError(Exception):
    """Base class of the errors doe-sr reports as a single line."""

    exit_code = 1


class UserError(DoeSrError):
    """Bad input: a study file, an argument, a missing folder or file. Exit code 2.

    The message names the offending field or path and says how to fix it.
    """

    exit_code = 2


class RunFailed(DoeSrError):
    """A run or an evaluation failed (diverged, out of memory, crashed). Exit code 1."""

    exit_code = 1


class TrialPruned(Exception):
    """A refinement trial the pruner stopped after an epoch (``doe-sr refine``).

    Not a :class:`DoeSrError`: it is no failure and never reaches the user as an error.
    Raised from the epoch hook, it ends ``model.fit`` at once; the engine records the
    trial as PRUNED in Optuna and its MLflow run as KILLED with the reason.
    """
