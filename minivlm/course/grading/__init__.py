"""Automatic checks for the exercise notebooks: a pass, a hint, or "not implemented yet".

Each chapter has a module `minivlm/course/grading/chNN.py` whose checks take the
learner's function, call it on small inputs and compare with the reference
implementation from `minivlm/`. A check cell in a notebook reads

    from minivlm.course.grading import ch01
    ch01.check_patchify(patchify)

and prints exactly one short block, never a traceback:

    ✅ patchify: passed
    ⏳ patchify: not implemented yet — replace `raise NotImplementedError()` with your code
    ❌ patchify: output has shape (2, 16, 48), expected (2, 16, 64). Hint: ...
    ❌ patchify: your code raised RuntimeError: shape '[2, 4]' is invalid ...
       at Cell In[5], line 7, in patchify

Writing a check is asserting with the `expect_*` helpers (they raise `Hint`)
inside a function decorated with `@check("name")`:

    @check("patchify")
    def check_patchify(patchify):
        images = torch.randn(2, 3, 8, 8)
        expect_close(patchify(images, 4), patching.patchify(images, 4), "patchify(images, 4)",
                     hint="each patch is flattened in (C, P, P) order")

When typical mistakes are known, `expect_known_mistakes` names the one the answer
matches: each mistake is the wrong value it gives on this input and what to change.

    expected = patching.patchify(images, 4)
    expect_known_mistakes(out, expected, [
        (images.reshape(2, -1, 48), "split H and W into patches before flattening, not a plain reshape."),
    ], "patchify(images, 4)", hint="each patch is flattened in (C, P, P) order")

passes when `out` matches `expected`, raises "patchify(images, 4) has the wrong values.
Hint: split H and W ..." when it matches the plain reshape, and `expect_close`'s own
message otherwise. Integer and boolean outputs compare exactly: `exact=True`.

Notebook convention (see `minivlm/course/exercises.py`): solution regions sit inside
function bodies, so an exercise notebook still runs top to bottom, and its
learner functions are only called from check cells, each reporting
"not implemented yet" until filled in.

(Over ~250 lines on purpose: running a check, finding the learner's line in a traceback and the
`expect_*` helpers are one small library that every chapter's checks import as a whole.)
"""

import contextlib
import functools
import inspect
import numbers
import os
import random
import sys
import traceback

import torch

from minivlm.course import OUTCOME_MIME  # noqa: F401  (re-exported: checks publish it)

NOT_IMPLEMENTED = "not implemented yet — replace `raise NotImplementedError()` with your code"
_MAX_MESSAGE_CHARS = 300


class Hint(AssertionError):
    """A failed check, with a message meant for the learner."""


# -----------------------------------------------------------------------------
# running a check


STATUSES = ("passed", "failed", "not-implemented", "crashed")


def run_check(name, check_fn):
    """Run `check_fn()`, print one line (two for a crash) saying how it went; return (status, message).

    status is one of STATUSES; message is the printed line without its emoji and name.
    """
    try:
        check_fn()
    except NotImplementedError as error:
        # The exercise stub is a bare `raise NotImplementedError()`; one with a
        # message comes from a library (e.g. an op missing on MPS): a real error.
        if not str(error):
            print(f"⏳ {name}: {NOT_IMPLEMENTED}")
            return "not-implemented", NOT_IMPLEMENTED
        return "crashed", _print_crash(name, error)
    except AssertionError as error:
        message = _first_line(error) or "an assertion failed"
        print(f"❌ {name}: {message}")
        if not isinstance(error, Hint):  # a bare `assert`, maybe in the learner's code
            _print_location(error)
        return "failed", message
    except Exception as error:
        return "crashed", _print_crash(name, error)
    print(f"✅ {name}: passed")
    return "passed", "passed"


class CheckResult:
    """What a `@check` function returns: truthy iff it passed, and silent as a cell's last value.

    `outcome` is the structured record also published to the notebook: a dict with the exercise
    `id`, its `points`, the `score` earned (points or 0), the `status` (see STATUSES) and the `message`.
    """

    def __init__(self, name, status, message, points):
        self.name, self.status = name, status
        self.outcome = {"id": name, "points": points, "score": points if status == "passed" else 0,
                        "status": status, "message": message}

    @property
    def passed(self):
        return self.status == "passed"

    def __bool__(self):
        return self.passed

    def __repr__(self):
        return f"CheckResult({self.name!r}, status={self.status!r})"

    def _ipython_display_(self):
        pass  # the check already printed its line; don't add `True` under it


class CheckFailed(AssertionError):
    """Raised by a check that did not pass when an autograder runs the notebook (see `check`)."""


def _publish(outcome):
    """Attach `outcome` to the running cell's outputs as OUTCOME_MIME data (only inside a Jupyter kernel)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    from IPython.display import display
    # the empty text/plain keeps front ends from saying they have no renderer for our MIME type
    display({OUTCOME_MIME: outcome, "text/plain": ""}, raw=True)


def check(name, points=1):
    """Decorator: `@check("patchify", points=2) def check_patchify(fn): ...` runs the body through `run_check`.

    The check prints its line and, inside a notebook, publishes its outcome (see CheckResult) as
    OUTCOME_MIME display data, which `minivlm grade` collects. Under nbgrader (which sets
    NBGRADER_EXECUTION when it executes a notebook) a check that did not pass also raises
    CheckFailed after printing, so that the cell errors and the autograder gives it no points.
    """
    def decorate(check_body):
        @functools.wraps(check_body)
        def run(*args, **kwargs):
            status, message = run_check(name, lambda: check_body(*args, **kwargs))
            result = CheckResult(name, status, message, points)
            _publish(result.outcome)
            if not result and os.environ.get("NBGRADER_EXECUTION"):
                raise CheckFailed(f"{name}: did not pass (see the line above)")
            return result
        run.exercise_id, run.points = name, points
        return run
    return decorate


# -----------------------------------------------------------------------------
# inputs for checks: random sizes, and calling the learner's function on copies


def check_rng():
    """A `random.Random` for a check's sizes: fresh entropy each run, or MINIVLM_CHECK_SEED if set (tests).

    Checks draw their sizes at random so that an answer hard-coded to one input's sizes cannot pass.
    """
    seed = os.environ.get("MINIVLM_CHECK_SEED")
    return random.Random(int(seed) if seed else None)


def torch_generator(rng):
    """A CPU `torch.Generator` seeded from `rng`, for the check's tensors (the learner's global RNG stays untouched)."""
    return torch.Generator().manual_seed(rng.getrandbits(63))


@contextlib.contextmanager
def one_thread():
    """Run a check's training on one CPU thread, then restore the learner's setting.

    The experiment models are too small to gain from more threads, and on a busy 2-core machine two
    spinning threads made them 5-10x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def call_learner(fn, *args, what=None, **kwargs):
    """`fn(*args, **kwargs)` on copies of the tensor arguments; a Hint if `fn` modified one of them.

    Compute the expected value from the originals (before or after: they are never handed to `fn`).
    Module arguments are passed as they are, and their parameters and buffers compared afterwards.
    """
    copied_args = [_copy(value) for value in args]
    copied_kwargs = {key: _copy(value) for key, value in kwargs.items()}
    snapshots = {id(v): _module_state(v) for v in [*args, *kwargs.values()] if isinstance(v, torch.nn.Module)}
    result = fn(*copied_args, **copied_kwargs)
    names = _parameter_names(fn, len(args))
    pairs = [(names[i], args[i], copied_args[i]) for i in range(len(args))]
    pairs += [(key, kwargs[key], copied_kwargs[key]) for key in kwargs]
    for argument, original, passed in pairs:
        before = snapshots.get(id(original), original)
        after = _module_state(passed) if isinstance(passed, torch.nn.Module) else passed
        if not _same(before, after):
            raise Hint(f"{what or getattr(fn, '__name__', 'your function')} modified its input `{argument}` in "
                       "place. Compute new tensors instead (x = x * 2, not x *= 2; masked_fill, not masked_fill_).")
    return result


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(item) for item in value)
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return value


def _module_state(module):
    return {key: tensor.detach().clone() for key, tensor in module.state_dict().items()}


def _same(before, after):
    if isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and before.shape == after.shape and before.dtype == after.dtype
                and torch.equal(before.nan_to_num(0.0) if before.is_floating_point() else before,
                                after.nan_to_num(0.0) if after.is_floating_point() else after)
                and torch.equal(_nan_mask(before), _nan_mask(after)))
    if isinstance(before, (list, tuple)):
        return isinstance(after, (list, tuple)) and len(before) == len(after) and all(map(_same, before, after))
    if isinstance(before, dict):
        return isinstance(after, dict) and before.keys() == after.keys() and all(
            _same(before[key], after[key]) for key in before)
    return True  # numbers, strings, generators: not compared


def _nan_mask(tensor):
    return tensor.isnan() if tensor.is_floating_point() else torch.zeros_like(tensor, dtype=torch.bool)


def _parameter_names(fn, count):
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"argument {i + 1}" for i in range(count)]


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = lines[0].strip() if lines else ""
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


def _print_crash(name, error):
    """Print the crash line (and where in the learner's code); return the line without emoji and name."""
    message = _first_line(error)
    line = f"your code raised {type(error).__name__}" + (f": {message}" if message else "")
    print(f"❌ {name}: {line}")
    _print_location(error)
    return line


def _print_location(error):
    location = _learner_location(error.__traceback__)
    if location:
        print(f"   at {location}")


def _learner_location(tb):
    """The innermost notebook cell in the traceback; outside a notebook, the innermost user file."""
    frames = traceback.extract_tb(tb)
    for frame in reversed(frames):
        cell = _notebook_cell(frame.filename)
        if cell:
            return f"{cell}, line {frame.lineno}, in {frame.name}"
    for frame in reversed(frames):
        if _is_user_file(frame.filename):
            return f"{os.path.basename(frame.filename)}, line {frame.lineno}, in {frame.name}"
    return None


def _notebook_cell(filename):
    """'Cell In[5]' when `filename` is code compiled from a Jupyter cell, else None."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is None:
        return None
    try:
        label = shell.compile.format_code_name(filename)  # IPython >= 8
    except Exception:
        return None
    return f"{label[0]} {label[1]}" if label else None


_NOT_USER_DIRS = tuple(
    os.path.normcase(os.path.abspath(path)) + os.sep
    for path in [os.path.dirname(__file__), os.path.dirname(os.__file__), os.path.dirname(torch.__path__[0])]
)


def _is_user_file(filename):
    path = os.path.normcase(os.path.abspath(filename))
    return not filename.startswith("<") and not path.startswith(_NOT_USER_DIRS)


# -----------------------------------------------------------------------------
# helpers for writing checks: each raises `Hint` with a learner-facing message


def _with_hint(message, hint):
    return f"{message} Hint: {hint}" if hint else message


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _require_tensor(value, what, hint=None):
    if not isinstance(value, torch.Tensor):
        raise Hint(_with_hint(f"{what} should be a torch.Tensor, got {type(value).__name__}.", hint))


def expect_shape(tensor, shape, what, hint=None):
    """`tensor` has `shape`; None in `shape` matches any size."""
    _require_tensor(tensor, what, hint)
    actual = tuple(tensor.shape)
    shape = tuple(shape)
    if len(actual) != len(shape) or any(s is not None and s != a for a, s in zip(actual, shape)):
        wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise Hint(_with_hint(f"{what} has shape {actual}, expected {wanted}.", hint))


def _expect_like(actual, expected, what, hint):
    """`actual` is a tensor of `expected`'s shape, dtype and device."""
    _require_tensor(actual, what, hint)
    expect_shape(actual, expected.shape, what, hint)
    if actual.dtype != expected.dtype:
        raise Hint(_with_hint(f"{what} has dtype {actual.dtype}, expected {expected.dtype}.", hint))
    if actual.device != expected.device:
        raise Hint(_with_hint(f"{what} is on {actual.device}, expected {expected.device}.", hint))


def expect_close(actual, expected, what, hint=None, atol=1e-5, rtol=1e-4):
    """`actual` matches `expected` in shape, dtype, device and values (up to atol + rtol * |expected|)."""
    if isinstance(expected, torch.Tensor):
        _expect_like(actual, expected, what, hint)
    else:  # a Python number or list: compare values only
        try:
            actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
        except (TypeError, ValueError, RuntimeError):
            raise Hint(_with_hint(f"{what} should be a number, got {_short_repr(actual)}.", hint)) from None
        expect_shape(actual, expected.shape, what, hint)
    actual = actual.detach().cpu().double()
    expected = expected.detach().cpu().double()
    if torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
        return
    wrong_nan = actual.isnan() != expected.isnan()
    if wrong_nan.any():
        raise Hint(_with_hint(f"{what} has {int(wrong_nan.sum())} NaN value(s) where none are expected (or the reverse).", hint))
    difference = (actual - expected).abs().nan_to_num(0.0)
    worst = torch.unravel_index(difference.argmax(), difference.shape) if difference.dim() else ()
    index = tuple(int(i) for i in worst)
    where = f" at index {index}" if index else ""
    raise Hint(_with_hint(
        f"{what} has the right shape but wrong values: max abs difference {difference.max().item():.3g}{where}"
        f" (got {actual[index].item():.4g}, expected {expected[index].item():.4g}).", hint))


def expect_equal(actual, expected, what, hint=None):
    """`actual == expected` exactly (tensors: same shape, dtype and device, and every element equal)."""
    if isinstance(expected, torch.Tensor):
        _expect_like(actual, expected, what, hint)
        if not torch.equal(actual.detach().cpu(), expected.detach().cpu()):
            mismatched = int((actual.detach().cpu() != expected.detach().cpu()).sum())
            raise Hint(_with_hint(f"{what} differs from the expected values at {mismatched} of {expected.numel()} positions.", hint))
    elif actual != expected:
        raise Hint(_with_hint(f"{what} is {_short_repr(actual)}, expected {_short_repr(expected)}.", hint))


def expect_known_mistakes(value, expected, mistakes, what, hint=None, *, exact=False, atol=1e-5, rtol=1e-4):
    """`value` matches `expected`, else the Hint names the known mistake that `value` matches.

    The comparison is `expect_equal`'s if `exact` (integer and boolean outputs), else
    `expect_close`'s with `atol` and `rtol`. `mistakes` lists `(wrong_value, mistake_hint)`:
    the tensor a typical mistake gives on this input, and what to change. A wrong answer
    equal to one of them (dtype and device aside) gets "`what` has the wrong values.
    Hint: `mistake_hint`"; a mistake whose value equals `expected` on this input can't be
    told apart from the right answer and is skipped. Any other wrong answer gets the
    ordinary mismatch message, with `hint`.
    """
    try:
        if exact:
            expect_equal(value, expected, what, hint)
        else:
            expect_close(value, expected, what, hint, atol=atol, rtol=rtol)
    except Hint:
        for wrong, mistake_hint in mistakes:
            if _matches(value, wrong, exact, atol, rtol) and not _matches(wrong, expected, exact, atol, rtol):
                raise Hint(f"{what} has the wrong values. Hint: {mistake_hint}") from None
        raise


def _matches(value, wrong, exact, atol, rtol):
    """Whether tensor `value` has the shape and values of `wrong`: equal if `exact`, else within tolerance."""
    if not isinstance(value, torch.Tensor) or value.shape != wrong.shape:
        return False
    value, wrong = value.detach().cpu(), wrong.detach().cpu()
    if exact:
        return torch.equal(value, wrong)
    return torch.allclose(value.double(), wrong.double(), atol=atol, rtol=rtol, equal_nan=True)


# -----------------------------------------------------------------------------
# answers to concept questions


def answer_number(value, what, integer=False):
    """The learner's answer as a Python number (an int if `integer`), else a Hint; a bool is not a number.

    A one-element tensor counts as its value; a float (256.0) is not an int.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise Hint(f"{what} should return {'an int' if integer else 'a number'}, got {_short_repr(value)}.")
    return int(value) if integer else value


def answer_choice(value, options, what):
    """The learner's letter among `options` (lower-cased; "b)" and "(b)" read as "b"), else a Hint naming them."""
    letter = value.strip().strip("()").lower() if isinstance(value, str) else None
    if letter not in options:
        letters = ", ".join(f'"{option}"' for option in options)
        raise Hint(f"{what} should return one of {letters}, got {_short_repr(value)}.")
    return letter

