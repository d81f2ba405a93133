"""Live sensor health from the structure of the most recent windows: how much to trust each modality now.

UniOMA's modality weights come from each modality's Gromov–Wasserstein discrepancy to the consensus
of all of them; at the objective's equilibrium ``lambda_m`` is a softmax of minus that discrepancy.
SGD on the logits follows a sensor that degrades far too slowly for an operator (tens of steps a
minute), so :class:`ModalityHealth` computes the discrepancy itself, beside inference, over the last
:attr:`~ModalityHealth.size` windows, and turns it into a trust factor ``h_m`` in ``(0, 1]`` that
multiplies the learned weights (and through them every expert's precision in the pose fusion).

For each modality ``m`` present in the windows:

1. its kernel is the cosine similarity of its embeddings between every pair of recent windows;
2. the kernel is standardised (zero mean, unit variance over the pairs). Under the square loss a flat
   kernel, which is what noise, a frozen value or a black frame give, is close to any consensus
   (docs/RESULTS.md E2: the tactile weight rose under noise); standardised, a flat kernel has no
   structure left and its discrepancy is that of an unrelated one;
3. the consensus is the weighted mean of the *other* modalities' standardised kernels (weights: the
   learned lambda times their own current health), which is the square-loss GW barycenter when every
   coupling is the identity. The windows are time-aligned, so the coupling between two modalities'
   windows is known; optimising it, as GW does for unaligned data, would align away a stream that
   lags the others. Leaving ``m`` out keeps a degraded sensor from pulling the consensus towards
   itself;
4. its discrepancy is ``d_m = mean over pairs (K_m - C_m)^2`` of the standardised kernel and the
   re-standardised consensus, ``2 (1 - correlation)``: 0 for the same structure, 2 for an unrelated
   one.

Modalities agree with the consensus to different degrees on clean data (a tactile pad is flat until
contact), so ``d_m`` is compared with its own clean level: the median and spread (MAD) of the
discrepancies seen while the modality was healthy (the first :attr:`~ModalityHealth.warmup` updates
are taken as clean). ``h_m = exp(-excess^2 / 2)`` with ``excess`` the discrepancy above the clean
median beyond ``margin`` spreads: exactly 1 within the clean fluctuations (steady weights without
faults), near 0 for a sensor whose structure has gone.

A third signal needs no other modality: **roughness**, the mean cosine distance of a modality's
embeddings between consecutive windows over that between any two of the recent ones, in log. A clean
sensor's embedding moves smoothly, so consecutive windows are much closer than the kernel's span
apart; noise at the signal's own scale leaves the kernel's structure (and the consensus) nearly intact
but makes each window about as far from the last as from any other. Compared with its clean level as
the others are, with a spread of at least :data:`ROUGHNESS_SPREAD`.

Pure numpy, no ROS. One update (six kernels of 64 windows and the pose experts) takes about 3 ms on
this project's 2-core CPU, beside ~24 ms of inference per window.
"""

from __future__ import annotations

from collections import deque

import numpy as np

DISTRUSTED = 0.5  # a modality whose trust is under this counts as failing (diagnostics, training)
MIN_PAIRS = 120  # pairs of windows (16 windows) before a modality's discrepancy is estimated
# the least spread of a clean log roughness: it swings by ~1 on clean data where a motion slows down
# (the far pairs draw closer), so trust falls only for a rise of 4 x 0.5 (7x), which noise exceeds
ROUGHNESS_SPREAD = 0.5
HEALTH_FLOOR = 1e-12  # h never reaches 0 (a fully distrusted modality keeps a defined weight), but an
# overconfident expert's precision (up to e^16) times it is still negligible


def standardized(values: np.ndarray) -> np.ndarray | None:
    """``values`` minus its mean over its std; None when it is flat (no structure)."""
    centred = values - values.mean()
    std = float(np.sqrt(np.mean(centred**2)))
    return centred / std if std > 1e-6 else None


def discrepancy(kernel: np.ndarray | None, consensus: np.ndarray | None) -> float:
    """Square-loss discrepancy of two standardised kernels over the same pairs, in ``[0, 4]``
    (``2 (1 - correlation)``); a flat kernel (None) counts as unrelated (2)."""
    if kernel is None or consensus is None:
        return 2.0
    return float(np.mean((kernel - consensus) ** 2))


class _CleanReference:
    """One signal's clean level for one modality, and how far a new value is above it.

    The first ``warmup`` values are taken as clean; later ones join the reference only while the
    modality is trusted, so a lasting fault never becomes the reference.
    """

    def __init__(self, warmup: int, history: int, floor: float) -> None:
        self.values: deque[float] = deque(maxlen=history)
        self.warmup, self.floor, self.seen = warmup, floor, 0

    def excess(self, value: float) -> float:
        """Robust z-score of ``value`` above the clean median (0 during the warm-up)."""
        self.seen += 1
        if self.seen <= self.warmup:
            self.values.append(value)
            return 0.0
        ref = np.fromiter(self.values, dtype=np.float64)
        median = float(np.median(ref))
        spread = max(1.4826 * float(np.median(np.abs(ref - median))), self.floor)
        return (value - median) / spread

    def keep(self, value: float) -> None:
        if self.seen > self.warmup:
            self.values.append(value)


def trust_of(excess: float, margin: float) -> float:
    """``exp(-(excess - margin)^2 / 2)`` above the margin, 1 below it, never under :data:`HEALTH_FLOOR`."""
    over = max(0.0, excess - margin)
    return max(float(np.exp(-0.5 * over**2)), HEALTH_FLOOR)


class ModalityHealth:
    """Per-modality trust from the last windows' embeddings and pose experts.

    Three signals, each the median over the last ``smooth`` windows and compared with its own clean
    level (:class:`_CleanReference`); their trusts multiply:

    - **structure**: the discrepancy of the modality's embedding kernel over the last ``size``
      windows to the consensus of the others (module docstring; the others weighted by their
      learned lambda times their current trust). A kernel that is flat while the consensus is not (a
      frozen sensor, a black frame, an all-zero signal: nothing in it tells the windows apart) gets
      the floor trust.
    - **pose agreement**: the product-of-experts pose head gives each modality's own pose estimate
      with its calibrated variance. For every two experts, the log of their mean squared position
      difference over the sum of their variances (a chi-square per axis); a modality's value is the
      median over the others. A sensor that still has structure but says something else (a biased
      camera, a noised joint state) is many of its own standard deviations from every other expert,
      while each healthy expert disagrees with it alone, one vote of ``M - 1``.
    - **roughness** (module docstring): a noised sensor whose structure survives.

    Args:
        modalities: the model's modality order.
        calibration: ``(M, 2)`` the pose head's calibration (position, rotation); None without a head.
        size: windows in the kernels.
        smooth: windows in the rolling median of each signal (a flicker of a few windows is ignored).
        margin: clean spreads above the clean median before trust starts to fall.
        warmup: windows at the start taken as clean references.
        history: values per modality and signal kept as its clean reference.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        calibration: np.ndarray | None = None,
        size: int = 64,
        smooth: int = 30,
        margin: float = 4.0,
        warmup: int = 256,
        history: int = 512,
    ) -> None:
        if size < 16:
            raise ValueError(f"size={size} must be >= 16")
        n = len(modalities)
        self.modalities, self.size, self.margin = modalities, size, margin
        self.calibration = None if calibration is None else np.asarray(calibration, dtype=np.float64)
        self._z: deque[np.ndarray] = deque(maxlen=size)
        self._mask: deque[np.ndarray] = deque(maxlen=size)
        self._d: deque[np.ndarray] = deque(maxlen=smooth)
        self._chi: deque[np.ndarray] = deque(maxlen=smooth)
        self._rough: deque[np.ndarray] = deque(maxlen=smooth)
        self._structure = [_CleanReference(warmup, history, 0.1) for _ in range(n)]
        self._agreement = [_CleanReference(warmup, history, 0.1) for _ in range(n)]
        self._smoothness = [_CleanReference(warmup, history, ROUGHNESS_SPREAD) for _ in range(n)]
        self.trust = np.ones(n)
        self.discrepancies = np.full(n, np.nan)  # the newest structural discrepancy per modality
        self.agreement = np.full(n, np.nan)  # the newest rolling log chi-square per modality
        self.roughness = np.full(n, np.nan)  # the newest rolling log roughness per modality
        self._parts = np.ones((n, 3))  # trust from (structure, agreement, smoothness)
        self._pairs = np.triu_indices(size, k=1)

    def reset(self) -> None:
        """Forget the recent windows (the data jumped: a new bag, a reset); the references stay."""
        self._z.clear()
        self._mask.clear()
        self._d.clear()
        self._chi.clear()
        self._rough.clear()

    def rebase(self) -> None:
        """New weights are in use (fine-tuning): the embeddings and experts the clean references were
        measured on have changed. Every trusted modality starts a new warm-up (its trust stays 1
        meanwhile); a distrusted one keeps its old references and its trust, so a sensor that is
        failing when the weights change is not taken as clean."""
        for m in range(len(self.modalities)):
            if self.trust[m] > 0.9:
                for refs in (self._structure, self._agreement, self._smoothness):
                    old = refs[m]
                    refs[m] = _CleanReference(old.warmup, old.values.maxlen, old.floor)

    def update(
        self, embeddings: np.ndarray, mask: np.ndarray, weights: np.ndarray, experts: np.ndarray | None = None
    ) -> np.ndarray:
        """Add one window and return the trust ``(M,)`` in ``(0, 1]`` to apply to it.

        Args:
            embeddings: ``(M, d)`` the window's unit embeddings.
            mask: ``(M,)`` bool, which modalities the window has.
            weights: ``(M,)`` the learned modality weights (any scale), for the consensuses.
            experts: ``(M, 13)`` the pose experts' outputs (:data:`~core.learn.models.EXPERT_OUTPUTS`),
                or None.
        """
        mask = np.asarray(mask, dtype=bool)
        prior = np.asarray(weights, dtype=np.float64) * self.trust * mask
        self._z.append(np.asarray(embeddings, dtype=np.float64))
        self._mask.append(mask)
        self._update_structure(prior)
        if experts is not None and self.calibration is not None:
            self._update_agreement(np.asarray(experts, dtype=np.float64), mask)
        self.trust = np.maximum(self._parts.prod(axis=1), HEALTH_FLOOR)
        return self.trust

    # -- structure ----------------------------------------------------------------------------
    def _update_structure(self, prior: np.ndarray) -> None:
        n = len(self._z)
        if n * (n - 1) // 2 < MIN_PAIRS:
            return
        rows, cols = self._pairs
        if n < self.size:
            keep = cols < n  # rows < cols always
            rows, cols = rows[keep], cols[keep]
        z = np.stack(self._z, axis=1)  # (M, n, d)
        present = np.stack(self._mask)  # (n, M)
        sims = (z @ z.transpose(0, 2, 1))[:, rows, cols].T  # (P, M) kernel entries per modality
        valid = present[rows] & present[cols]
        self._update_roughness(sims, valid, rows, cols)
        # every pair valid for every modality (the usual case): each kernel standardised once
        whole = [standardized(sims[:, k]) for k in range(len(self.modalities))] if valid.all() else None
        newest = np.full(len(self.modalities), np.nan)
        for m in range(len(self.modalities)):
            result = self._discrepancy(m, sims, valid, prior, whole)
            if result is not None:  # else not enough to compare with
                d, flat = result
                newest[m] = np.inf if flat else d
        self._d.append(newest)
        self._judge(self._d, self._structure, self.discrepancies, 0)

    def _judge(
        self, recent: deque[np.ndarray], references: list[_CleanReference], newest: np.ndarray, part: int
    ) -> None:
        """One signal's trust per modality: the rolling median of ``recent`` (kept in ``newest``)
        against the modality's clean reference, into column ``part`` of the trusts that multiply; an
        infinite value (a flat kernel) gets the floor. A modality without a value keeps its trust."""
        for m, value in enumerate(self._smoothed(recent)):
            if value is None:
                continue
            newest[m] = value
            ref = references[m]
            trust = HEALTH_FLOOR if value == np.inf else trust_of(ref.excess(value), self.margin)
            if trust > 0.9:
                ref.keep(value)
            self._parts[m, part] = trust

    def _smoothed(self, recent: deque[np.ndarray]) -> list[float | None]:
        """Per modality, the median of its recent values (None with fewer than half the window)."""
        if len(recent) < recent.maxlen // 2:
            return [None] * len(self.modalities)
        rolling = np.stack(recent)  # (T, M), NaN where not estimated
        enough = (~np.isnan(rolling)).sum(axis=0) >= recent.maxlen // 2
        medians = np.nanmedian(np.where(enough, rolling, 0.0), axis=0)
        return [float(v) if ok else None for v, ok in zip(medians, enough, strict=True)]

    def _discrepancy(
        self,
        m: int,
        sims: np.ndarray,
        valid: np.ndarray,
        prior: np.ndarray,
        whole: list[np.ndarray | None] | None,
    ) -> tuple[float, bool] | None:
        """``(d_m, whether m's kernel is flat)``, or None without a consensus to compare with.
        ``whole``: every kernel standardised over all pairs, when every pair is valid for all."""
        seen = (valid & valid[:, m : m + 1]).sum(axis=0)
        others = [k for k in range(len(self.modalities)) if k != m and prior[k] > 0 and seen[k] >= MIN_PAIRS]
        if not others or seen[m] < MIN_PAIRS:
            return None
        pairs = valid[:, m] & valid[:, others].all(axis=1)
        if pairs.sum() < MIN_PAIRS:
            return None
        kernels = whole if whole is not None else [standardized(sims[pairs, k]) for k in range(len(prior))]
        parts = [(prior[k], kernels[k]) for k in others if kernels[k] is not None]
        if not parts:
            return None  # the others are flat too (nothing moves): no evidence either way
        consensus = standardized(sum(w * k for w, k in parts) / sum(w for w, _ in parts))
        kernel = kernels[m]
        return discrepancy(kernel, consensus), kernel is None

    # -- smoothness ---------------------------------------------------------------------------
    def _update_roughness(
        self, sims: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> None:
        """Per modality, ``log`` of the mean cosine distance between consecutive windows over the mean
        between any two of the recent ones: how much of its change over the kernel's span happens
        from one window to the next. A clean sensor moves smoothly (a small ratio, in contact or
        not); noise makes every window as far from the last as from any other (a ratio near 1)."""
        distance = np.where(valid, 1.0 - sims, 0.0)  # (P, M)
        step = cols == rows + 1
        pairs, steps = valid.sum(axis=0), valid[step].sum(axis=0)
        near = distance[step].sum(axis=0) / np.maximum(steps, 1)
        far = distance.sum(axis=0) / np.maximum(pairs, 1)
        # a still signal (a tactile pad out of contact) says nothing either way
        known = (steps >= 8) & (pairs >= MIN_PAIRS) & (far > 1e-6)
        rough = np.full(len(self.modalities), np.nan)
        rough[known] = np.log(np.maximum(near[known], 1e-12) / far[known])
        self._rough.append(rough)
        self._judge(self._rough, self._smoothness, self.roughness, 2)

    # -- pose agreement -----------------------------------------------------------------------
    def _update_agreement(self, experts: np.ndarray, mask: np.ndarray) -> None:
        M = len(self.modalities)
        mu = experts[:, :3]
        var = np.exp(experts[:, 3:6]) * self.calibration[:, :1]
        # pairwise chi-square of every two present experts; an expert's value is the median over the
        # others, so one failing expert cannot make the healthy ones look bad (it is one vote of M-1)
        diff = (mu[:, None] - mu[None]) ** 2 / (var[:, None] + var[None])  # (M, M, 3)
        pair = np.log(diff.mean(-1) + 1e-12)
        both = mask[:, None] & mask[None] & ~np.eye(M, dtype=bool)
        chi = np.full(M, np.nan)
        for m in range(M):
            if both[m].any():
                chi[m] = float(np.median(pair[m, both[m]]))
        self._chi.append(chi)
        self._judge(self._chi, self._agreement, self.agreement, 1)
