"""LazyAdam: Adam for embedding tables with sparse gradients, where a batch computes only the rows it touches, yet
every row ends where the course's dense Adam would have taken it.

Dense Adam steps every row at every step. A row no batch touches has the gradient weight_decay * row, so its
moments decay toward that L2 term, its remaining momentum keeps moving it, and the L2 term, divided by the decaying
second moment, shrinks it toward zero ever faster: rarely seen rows fade. None of those steps change a loss computed
in between (the row is not read), so they can be taken late, all at once, when a batch touches the row again or
before the model is evaluated (`catch_up`). For k missed steps, in closed form: the momentum's geometric coast, then
the L2 shrink (the L2 gradient entering the momentum as in dense Adam, exponential while the old second moment
dominates, integrated over its decay; at most lr per step, Adam's largest), then the moments' decay toward the L2
term. Measured on the 1,080,401 pairs of the loop of days' three rounds at 3a089e6 (`bench/train_speed.py`), test MSE
against dense Adam's: 0.104928 against 0.104944 (the course's 2023 model, dot, dimension 100), 0.104184 against
0.104196 (the seminar's, dimension 10), 0.100514 against 0.100565 (ours, cosine, 128); the seminar's validation loss
within 0.0005 of dense Adam's at every epoch. Updating only the touched rows (no catch-up) overfits from the fifth
epoch on.

The touched rows then take Adam's update with weight decay, torch's formula in float32; the bias correction counts
the table's steps, as dense Adam's does, so when every row is in every batch the update is dense Adam's to float32
rounding (torch's fused kernel differs in the last bits, by row length). Each step is one compiled call (numba) over
the batch's rows, with element-wise passes the compiler vectorises: as tensor operations the same arithmetic took
about 30 passes over the rows and two thirds of an epoch.

For the dot and cosine models `train_pairs` compiles the whole training step (predictions, the loss's gradient
summed per row, the step) into that one call, and brings the touched rows to the previous step before reading them,
so a batch scores them where dense Adam has them (after torch's backward pass `step` can only catch them up after
they were read). The MLP keeps torch's graph and `step`.

That call, and the catch-up of every row before an evaluation, run on numba's threads (every core unless
NUMBA_NUM_THREADS or `compiled_threads` says otherwise) with the same bits on any number of them: each thread takes
its own rows (catch-ups, Adam's step) or pairs (predictions and each pair's gradient terms), and a row's gradient
adds its pairs' terms in batch order, as the one-pass loop on one thread does (`_train_pairs_in_order`, which a single
thread runs: the phases cost it a fifth more). The 128-dim cosine model's step on 2 idle cores: 2.5-3.2 ms on two
threads against 3.5-4.3 ms on one (`bench/train_step.py`, which also compares the bits).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numba
import numpy as np
import torch

# A faded row's norm: far below what a prediction resolves. Weights under NEGLIGIBLE_WEIGHT become zeros, so neither
# they nor their moments ever reach float32's subnormal range (about 100 times slower arithmetic on x86).
FADED_ROW_NORM = 1e-6
NEGLIGIBLE_WEIGHT = 1e-12
COSINE_EPS = 1e-8  # cosine's denominator is max(|x| |y|, COSINE_EPS), as torch's F.cosine_similarity


# The L2 shrink's e^x, written out: libm's expf, a call per element, took as long as all the rest of a row's missed
# steps. e^x = 2^n 2^f with n = round(x log2 e) and |f| <= 1/2: 2^f by its Taylor series to degree 7 (relative error
# below 1e-8), 2^n written into a float32's exponent bits; about 2e-6 relative in all (x rounded to float32).
LOG2_E = 1.4426950408889634
C7, C6, C5, C4, C3, C2, C1, C0 = (np.float32(math.log(2.0) ** k / math.factorial(k)) for k in range(7, -1, -1))
# A shrink below e^-60 (1e-26) leaves any weight under NEGLIGIBLE_WEIGHT, so it is taken as e^-60: products of
# smaller ones fall into float32's subnormal range, where arithmetic is about 100 times slower.
SMALLEST_EXPONENT = -60.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _take_missed_steps(weight, exp_avg, exp_avg_sq, row, missed, correction, lr, decay, beta1, beta2, eps, scratch):
    """Move one row (its weights and moments, in place) through the `missed` steps dense Adam took on it, with the
    gradient decay * row; `correction` is Adam's bias correction sqrt(1 - beta2^t) / (1 - beta1^t) at the last of
    them (about constant). `scratch`: rows for the direction and the shrink, and int32 bits with their float32
    view. Element-wise passes in float32 that the compiler vectorises."""
    direction, shrink, bits, powers = scratch
    beta1_k, beta2_k = beta1**missed, beta2**missed
    # The momentum coasts: step j moves by beta1^j m / sqrt(beta2^j v), a geometric sum over the k steps.
    growth, growth_k = 1.0 / math.sqrt(beta2), 1.0 / math.sqrt(beta2_k)
    ratio = beta1 * growth
    coasting_steps = ratio * (1.0 - beta1_k * growth_k) / (1.0 - ratio)  # the sum of ratio^j over the k steps
    coast = np.float32(lr * correction * coasting_steps)
    # The L2 gradient enters the momentum as it does in dense Adam, a share 1 - beta1^j of it by step j (the old
    # momentum, its L2 part included, is the coast above), so it shrinks the row by (1 - beta1^j) lr * decay * |w| /
    # sqrt(beta2^j v) at step j, but never by more than lr. Taking the whole of it from the first step counted it
    # twice over the coast: ten times too much in a one-step catch-up, and the dot models' test MSE 4-5% off dense
    # Adam's.
    ramped_steps = growth * (growth_k - 1.0) / (growth - 1.0) - coasting_steps
    shrink_rate = np.float32(-lr * correction * decay * ramped_steps)
    at_most, eps32, negligible = np.float32(missed * lr), np.float32(eps), np.float32(NEGLIGIBLE_WEIGHT)
    log2_e, smallest, half = np.float32(LOG2_E), np.float32(SMALLEST_EXPONENT), np.float32(0.5)
    width = weight.shape[1]
    for j in range(width):
        per_root = np.float32(1.0) / (np.sqrt(exp_avg_sq[row, j]) + eps32)
        direction[j] = weight[row, j] - coast * exp_avg[row, j] * per_root
        scaled = max(shrink_rate * per_root, smallest) * log2_e
        whole = np.floor(scaled + half)
        f = scaled - whole
        shrink[j] = ((((((C7 * f + C6) * f + C5) * f + C4) * f + C3) * f + C2) * f + C1) * f + C0
        bits[j] = (np.int32(whole) + np.int32(127)) << np.int32(23)
    kept = 0
    for j in range(width):
        size = np.abs(direction[j])
        remaining = max(size * (shrink[j] * powers[j]), size - at_most)
        weight[row, j] = np.copysign(remaining, direction[j]) if remaining >= negligible else np.float32(0.0)
        kept += remaining >= negligible
    # Dense Adam never lands a faded row on exact zeros: it swings around zero and leaves a residue whose signs still
    # point somewhere. A row of exact zeros would score every track alike, and an export would then give every such
    # track one tie-broken list (the smallest track ids). So a row that fades out keeps its last direction, at a norm
    # no prediction can see.
    if kept == 0 and np.any(direction):
        norm = math.sqrt(np.sum(direction.astype(np.float64) ** 2))
        weight[row] = direction * np.float32(FADED_ROW_NORM / max(norm, 1e-12))
    # The moments decay toward the L2 term's.
    keep1, keep2 = np.float32(beta1_k), np.float32(beta2_k)
    gain1, gain2, decay32 = np.float32(1.0 - beta1_k), np.float32(1.0 - beta2_k), np.float32(decay)
    for j in range(width):
        l2 = decay32 * weight[row, j]
        exp_avg[row, j] = exp_avg[row, j] * keep1 + gain1 * l2
        exp_avg_sq[row, j] = exp_avg_sq[row, j] * keep2 + gain2 * l2 * l2


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _dot(a, b):
    """Sum of a * b in float32, in vector lanes (reassociated, the same order on every machine: code pinned to
    Haswell)."""
    total = np.float32(0.0)
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _distinct_rows(ids, slot):
    """The distinct rows of a batch (in order of first appearance) and each id's index among them. `slot` (one entry
    per table row, all -1) is scratch space, left as it was found."""
    rows = np.empty(ids.shape[0], dtype=np.int64)
    local = np.empty(ids.shape[0], dtype=np.int64)
    count = 0
    for i in range(ids.shape[0]):
        row = ids[i]
        if slot[row] < 0:
            slot[row], rows[count] = count, row
            count += 1
        local[i] = slot[row]
    slot[rows[:count]] = -1
    return rows[:count], local


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sum_by_row(ids, values, slot):
    """The distinct rows of a batch (in order of first appearance) and each one's summed gradient, as torch's
    coalesce gives them; `slot` as for `_distinct_rows`."""
    rows, local = _distinct_rows(ids, slot)
    sums = np.zeros((rows.shape[0], values.shape[1]), dtype=values.dtype)
    for i in range(ids.shape[0]):
        sums[local[i]] += values[i]
    return rows, sums


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bring_rows_to(weight, exp_avg, exp_avg_sq, last_step, rows, now, lr, decay, beta1, beta2, eps):
    """Every given row through the steps it missed up to step `now`."""
    width = weight.shape[1]
    bits = np.empty(width, np.int32)
    scratch = (np.empty(width, dtype=np.float32), np.empty(width, dtype=np.float32), bits, bits.view(np.float32))
    correction = math.sqrt(1.0 - beta2**now) / (1.0 - beta1**now) if now > 0 else 1.0
    for row in rows:
        missed = now - last_step[row]
        if now > 0 and missed > 0:
            _take_missed_steps(
                weight, exp_avg, exp_avg_sq, row, missed, correction, lr, decay, beta1, beta2, eps, scratch
            )
        last_step[row] = now


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _adam_rows(weight, exp_avg, exp_avg_sq, last_step, rows, grads, step, lr, decay, beta1, beta2, eps):
    """Adam's step `step` (torch's formula with weight decay, in float32) on rows already current at step - 1."""
    step_size, correction2_sqrt = np.float32(lr / (1.0 - beta1**step)), np.float32(math.sqrt(1.0 - beta2**step))
    decay32, beta1_32, beta2_32, eps32 = np.float32(decay), np.float32(beta1), np.float32(beta2), np.float32(eps)
    keep1, keep2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    for i in range(rows.shape[0]):
        row = rows[i]
        w, m, v, g = weight[row], exp_avg[row], exp_avg_sq[row], grads[i]
        for j in range(w.shape[0]):
            grad = g[j] + w[j] * decay32
            m[j] = m[j] * beta1_32 + grad * keep1
            v[j] = v[j] * beta2_32 + grad * grad * keep2
            w[j] = w[j] - step_size * m[j] / (np.sqrt(v[j]) / correction2_sqrt + eps32)
        last_step[row] = step


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _step_rows(weight, exp_avg, exp_avg_sq, last_step, slot, ids, values, step, lr, decay, beta1, beta2, eps):
    """Adam's step `step` on the rows a batch touched (`ids`, one per gradient row in `values`, repeats summed),
    each row first brought to step - 1."""
    rows, grads = _sum_by_row(ids, values, slot)
    _bring_rows_to(weight, exp_avg, exp_avg_sq, last_step, rows, step - 1, lr, decay, beta1, beta2, eps)
    _adam_rows(weight, exp_avg, exp_avg_sq, last_step, rows, grads, step, lr, decay, beta1, beta2, eps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _train_pairs_in_order(
    context, track, context_ids, track_ids, targets, cosine, absolute, step, lr, decay, beta1, beta2, eps
):
    """`_train_pairs` on one thread, in one pass over the pairs (each pair's terms added to its rows' gradients as it
    is scored): the same bits, and a fifth faster than the threaded phases run on one thread (the 128-dim cosine
    model's step 3.5-4.2 ms against 4.1-5.0 ms), which is how `make repro` runs it while two stages share 2 cores."""
    weight_c, m_c, v_c, last_c, slot_c = context
    weight_t, m_t, v_t, last_t, slot_t = track
    rows_c, local_c = _distinct_rows(context_ids, slot_c)
    rows_t, local_t = _distinct_rows(track_ids, slot_t)
    now = step - 1
    _bring_rows_to(weight_c, m_c, v_c, last_c, rows_c, now, lr, decay, beta1, beta2, eps)
    _bring_rows_to(weight_t, m_t, v_t, last_t, rows_t, now, lr, decay, beta1, beta2, eps)
    grads_c = np.zeros((rows_c.shape[0], weight_c.shape[1]), dtype=np.float32)
    grads_t = np.zeros((rows_t.shape[0], weight_t.shape[1]), dtype=np.float32)
    count = targets.shape[0]
    scale = np.float32((1.0 if absolute else 2.0) / count)
    smallest = np.float32(COSINE_EPS)
    total = 0.0
    for i in range(count):
        a, b = weight_c[context_ids[i]], weight_t[track_ids[i]]
        loss, across, along_a, along_b = _score_pair(a, b, targets[i], cosine, absolute, scale, smallest)
        total += loss
        grad_a, grad_b = grads_c[local_c[i]], grads_t[local_t[i]]
        if cosine:
            for j in range(a.shape[0]):
                grad_a[j] += across * b[j] - along_a * a[j]
                grad_b[j] += across * a[j] - along_b * b[j]
        else:
            for j in range(a.shape[0]):
                grad_a[j] += across * b[j]
                grad_b[j] += across * a[j]
    _adam_rows(weight_c, m_c, v_c, last_c, rows_c, grads_c, step, lr, decay, beta1, beta2, eps)
    _adam_rows(weight_t, m_t, v_t, last_t, rows_t, grads_t, step, lr, decay, beta1, beta2, eps)
    return total / count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _share(count, shares, index):
    """The bounds of part `index` of range(count) cut into `shares` nearly equal parts."""
    return count * index // shares, count * (index + 1) // shares


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bring_rows_to_threaded(weight, exp_avg, exp_avg_sq, last_step, rows, now, lr, decay, beta1, beta2, eps, shares):
    """`_bring_rows_to` with the rows cut into `shares` parts for numba's threads: each row's arithmetic is its own,
    so any thread count gives the same bits."""
    for share in numba.prange(shares):
        start, stop = _share(rows.shape[0], shares, share)
        _bring_rows_to(weight, exp_avg, exp_avg_sq, last_step, rows[start:stop], now, lr, decay, beta1, beta2, eps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _pairs_by_row(local, count):
    """Each of `count` rows' pairs (indices into `local`, the pairs' row numbers) in batch order, as CSR: the pairs
    of row r are order[starts[r]:starts[r + 1]]."""
    starts = np.zeros(count + 1, dtype=np.int64)
    for i in range(local.shape[0]):
        starts[local[i] + 1] += 1
    for r in range(count):
        starts[r + 1] += starts[r]
    order, filled = np.empty(local.shape[0], dtype=np.int64), starts[:count].copy()
    for i in range(local.shape[0]):
        order[filled[local[i]]] = i
        filled[local[i]] += 1
    return starts, order


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _score_pair(a, b, target, cosine, absolute, scale, smallest):
    """One pair's loss term and its gradient's coefficients: d loss / d a = across * b - along_a * a (and the same
    with a and b swapped). The prediction is the dot product, or the cosine clamped as torch's formula below."""
    dot = _dot(a, b)
    zero = np.float32(0.0)
    if cosine:
        squares_a, squares_b = _dot(a, a), _dot(b, b)
        squares = squares_a * squares_b
        clamped = not squares > smallest * smallest
        norm = smallest if clamped else np.sqrt(squares)
        prediction = dot / norm
    else:
        prediction = dot
    error = prediction - target
    if absolute:
        term, slope = abs(error), scale * np.float32(np.sign(error))
    else:
        term, slope = error * error, scale * error
    if not cosine:
        return term, slope, zero, zero
    # d(x.y / |x||y|)/dx = y / (|x||y|) - prediction * x / |x|^2; the clamp's own gradient is zero.
    along_a = zero if clamped else slope * prediction / squares_a
    along_b = zero if clamped else slope * prediction / squares_b
    return term, slope / norm, along_a, along_b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _step_summed_rows(
    weight, exp_avg, exp_avg_sq, last_step, rows, starts, order, terms, step, lr, decay, beta1, beta2, eps
):
    """Adam's step on each given row with its gradient: the sum of its pairs' gradient terms (`terms`, one row per
    pair), in batch order (its pairs are order[starts[r]:starts[r + 1]])."""
    gradients = np.zeros((rows.shape[0], weight.shape[1]), dtype=np.float32)
    for r in range(rows.shape[0]):
        for i in order[starts[r] : starts[r + 1]]:
            gradients[r] += terms[i]
    _adam_rows(weight, exp_avg, exp_avg_sq, last_step, rows, gradients, step, lr, decay, beta1, beta2, eps)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _train_pairs(
    context, track, context_ids, track_ids, targets, cosine, absolute, step, lr, decay, beta1, beta2, eps, shares
):
    """One training step of the contextual model on a batch of pairs, in one compiled call: the touched rows brought
    to step - 1, the predictions (dot, or cosine clamped as torch's formula), the loss's gradient (mean squared or
    absolute error, as torch's mse_loss and l1_loss), summed per row, then Adam's step on those rows. `context` and
    `track` are (weight, exp_avg, exp_avg_sq, last_step, slot) tuples. Returns the batch's mean loss.

    Each phase cuts its pairs or rows into `shares` parts for numba's threads, and every sum keeps one order (a row's
    gradient over its pairs in batch order, the loss over the pairs), so the bits do not depend on the thread count."""
    weight_c, m_c, v_c, last_c, slot_c = context
    weight_t, m_t, v_t, last_t, slot_t = track
    rows_c, local_c = _distinct_rows(context_ids, slot_c)
    rows_t, local_t = _distinct_rows(track_ids, slot_t)
    count, now = targets.shape[0], step - 1
    for part in numba.prange(2 * shares):
        table, share = divmod(np.int64(part), shares)  # the index is unsigned: mixed with signed it types as a float
        if table == 0:
            start, stop = _share(rows_c.shape[0], shares, share)
            _bring_rows_to(weight_c, m_c, v_c, last_c, rows_c[start:stop], now, lr, decay, beta1, beta2, eps)
        else:
            start, stop = _share(rows_t.shape[0], shares, share)
            _bring_rows_to(weight_t, m_t, v_t, last_t, rows_t[start:stop], now, lr, decay, beta1, beta2, eps)
    scale = np.float32((1.0 if absolute else 2.0) / count)
    smallest = np.float32(COSINE_EPS)
    losses = np.empty(count, dtype=np.float32)
    terms_c = np.empty((count, weight_c.shape[1]), dtype=np.float32)
    terms_t = np.empty((count, weight_t.shape[1]), dtype=np.float32)
    for share in numba.prange(shares):
        start, stop = _share(count, shares, share)
        for i in range(start, stop):
            a, b = weight_c[context_ids[i]], weight_t[track_ids[i]]
            losses[i], across, along_a, along_b = _score_pair(a, b, targets[i], cosine, absolute, scale, smallest)
            if cosine:
                for j in range(a.shape[0]):
                    terms_c[i, j] = across * b[j] - along_a * a[j]
                    terms_t[i, j] = across * a[j] - along_b * b[j]
            else:
                for j in range(a.shape[0]):
                    terms_c[i, j] = across * b[j]
                    terms_t[i, j] = across * a[j]
    starts_c, order_c = _pairs_by_row(local_c, rows_c.shape[0])
    starts_t, order_t = _pairs_by_row(local_t, rows_t.shape[0])
    for part in numba.prange(2 * shares):
        table, share = divmod(np.int64(part), shares)  # the index is unsigned: mixed with signed it types as a float
        if table == 0:
            start, stop = _share(rows_c.shape[0], shares, share)
            rows, starts = rows_c[start:stop], starts_c[start:]
            _step_summed_rows(
                weight_c, m_c, v_c, last_c, rows, starts, order_c, terms_c, step, lr, decay, beta1, beta2, eps
            )
        else:
            start, stop = _share(rows_t.shape[0], shares, share)
            rows, starts = rows_t[start:stop], starts_t[start:]
            _step_summed_rows(
                weight_t, m_t, v_t, last_t, rows, starts, order_t, terms_t, step, lr, decay, beta1, beta2, eps
            )
    total = 0.0
    for i in range(count):
        total += losses[i]
    return total / count


@contextlib.contextmanager
def compiled_threads(count: int | None) -> Iterator[None]:
    """numba's thread count for the block (None: leave it, every core unless NUMBA_NUM_THREADS says otherwise)."""
    previous = numba.get_num_threads()
    if count is not None:
        numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


class LazyAdam(torch.optim.Optimizer):
    """Adam over embedding tables built with sparse=True (see the module's docstring)."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps})
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.dtype != torch.float32 or not weight.is_contiguous():
                    raise TypeError("LazyAdam takes contiguous float32 tables")

    def _state(self, weight: torch.Tensor) -> dict:
        state = self.state[weight]
        if not state:
            state.update(
                step=0,
                exp_avg=torch.zeros_like(weight),
                exp_avg_sq=torch.zeros_like(weight),
                last_step=torch.zeros(len(weight), dtype=torch.int64),  # the step each row is current at
                slot=torch.full((len(weight),), -1, dtype=torch.int64),  # scratch for summing a batch's repeated ids
            )
        return state

    @staticmethod
    def _arrays(weight: torch.Tensor, state: dict) -> tuple[np.ndarray, ...]:
        """The table, its moments and its rows' steps as numpy views of the same memory."""
        return tuple(
            each.detach().numpy() for each in (weight, state["exp_avg"], state["exp_avg_sq"], state["last_step"])
        )

    @staticmethod
    def _hyper(group: dict) -> tuple[float, ...]:
        beta1, beta2 = group["betas"]
        return float(group["lr"]), float(group["weight_decay"]), float(beta1), float(beta2), float(group["eps"])

    @torch.no_grad()
    def catch_up(self) -> None:
        """Bring every row to the current step, as dense Adam has it (before the model is evaluated or saved)."""
        for group in self.param_groups:
            for weight in group["params"]:
                state = self._state(weight)
                rows = np.arange(len(weight), dtype=np.int64)
                _bring_rows_to_threaded(
                    *self._arrays(weight, state), rows, state["step"], *self._hyper(group), numba.get_num_threads()
                )

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                if not weight.grad.is_sparse:
                    raise RuntimeError("LazyAdam needs sparse gradients: build the embeddings with sparse=True")
                state, grad = self._state(weight), weight.grad
                state["step"] += 1
                ids, values = grad._indices()[0].contiguous().numpy(), grad._values().contiguous().numpy()
                arrays = (*self._arrays(weight, state), state["slot"].numpy())
                _step_rows(*arrays, ids, values, state["step"], *self._hyper(group))

    @torch.no_grad()
    def train_pairs(
        self, context_ids: np.ndarray, track_ids: np.ndarray, targets: np.ndarray, cosine: bool, absolute: bool
    ) -> float:
        """A whole training step of the contextual model (forward, backward and this optimiser's step, compiled as
        one call) for an optimiser over exactly its two tables, context then track; the batch's mean loss.

        Unlike `step` after torch's backward pass, the touched rows are brought to the previous step before they are
        read, so the batch sees them where dense Adam has them."""
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 2:
            raise TypeError("train_pairs needs a LazyAdam over exactly two tables: context, then track")
        (group,) = self.param_groups
        tables = []
        for weight in group["params"]:
            state = self._state(weight)
            state["step"] += 1
            tables.append((*self._arrays(weight, state), state["slot"].numpy()))
        step, hyper = state["step"], self._hyper(group)  # both tables take every step
        shares = numba.get_num_threads()  # passed in: called in compiled code, it keeps numba from caching the code
        arguments = (*tables, context_ids, track_ids, targets, cosine, absolute, step, *hyper)
        if shares == 1:
            return float(_train_pairs_in_order(*arguments))
        return float(_train_pairs(*arguments, shares))
