"""From a relevance map to a segmentation mask: Simple, GMM and BMM.

Follows seed 003 ("From Explanations to Segmentation: Using Explainable AI for Image
Segmentation"), section 3.3.2 "Segmentation from LRP". Three ways of turning a raw relevance
map (H, W) -- any real values, signed, of any scale -- into a boolean foreground mask (H, W):

``simple``
    iterative mean ("isodata") thresholding of the min-max normalised map.
``gmm``
    5 x 5 mean filter, then a three-component Gaussian mixture on the 1-D filtered values; the
    foreground is the component that is most probable for the largest filtered value.
``bmm``
    5 x 5 mean filter, negatives set to zero, the smaller half dropped, the rest mapped to
    [0, 1] and fitted with a two-component Beta mixture by an EM with the modified E-step of
    the seed; the foreground is the "damage" (high) component.

:func:`refine_mask` (not in the seed) fills a mask's holes and takes back the ring that the
first convolution's z^B rule spreads around an object; :func:`threshold_sweep` gives precision
and recall of plain thresholds for precision-recall curves, and :func:`segment` dispatches on
the method name.

Every function accepts a numpy array or a torch tensor (any real dtype, on any device) and
returns numpy arrays; the input is never modified. A constant map carries no information about
where the foreground is: every method returns an all-background mask for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage, special, stats

from ...core.explanation import normalize_map
from ...core.validate import check_int, check_number

__all__ = [
    "SEGMENTATION_METHODS",
    "BetaMixtureFit",
    "bmm_segmentation",
    "gmm_segmentation",
    "refine_mask",
    "segment",
    "simple_segmentation",
    "threshold_sweep",
]

SEGMENTATION_METHODS = ("simple", "gmm", "bmm")

#: Side of the square mean filter applied before the GMM and the BMM (seed 003: five by five).
FILTER_SIZE = 5
#: Border handling of the mean filter (scipy.ndimage mode): the map mirrored about its edge
#: (``d c b a | a b c d``), so border pixels are averaged with real neighbours, not zeros.
FILTER_MODE = "reflect"
#: Distance kept from 0 and 1 by the values given to the Beta likelihood.
BETA_EPS = 1e-6
#: Smallest component variance (in units of the [0, 1] scale) allowed in the BMM M-step.
BETA_MIN_VAR = 1e-8
#: Quantile bounding the one-sided (lower) interval of the BMM background component.
BACKGROUND_QUANTILE = 0.9


# --------------------------------------------------------------------------- validation


def _relevance_array(relevance, name: str = "relevance") -> np.ndarray:
    """A finite 2-D float64 copy of a numpy/torch map, or a ValueError naming ``name``."""
    if isinstance(relevance, torch.Tensor):
        if relevance.is_complex():
            raise ValueError(f"{name}: expected a real-valued map, got a complex tensor "
                             f"({relevance.dtype})")
        array = relevance.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(relevance)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a real-valued (bool, int or float) map, "
                             f"got dtype {array.dtype}")
        array = array.astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D map (H, W), got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ValueError(f"{name}: expected a non-empty map, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite value(s)")
    return array


def _mean_filter(relevance: np.ndarray) -> np.ndarray:
    return ndimage.uniform_filter(relevance, size=FILTER_SIZE, mode=FILTER_MODE)


# --------------------------------------------------------------------------- Simple


def _isodata_threshold(values: np.ndarray, tol: float, max_iter: int) -> float:
    """Iterative mean threshold of a 1-D array with at least two distinct values."""
    threshold = values.mean()
    for _ in range(max_iter):
        above = values > threshold
        # Both classes stay non-empty: the threshold lies strictly between min and max.
        new = 0.5 * (values[above].mean() + values[~above].mean())
        done = abs(new - threshold) < tol
        threshold = new
        if done:
            break
    return float(threshold)


def simple_segmentation(relevance, tol: float = 1e-6, max_iter: int = 1000,
                        return_threshold: bool = False):
    """Segment a relevance map by iterative mean thresholding (seed 003, 3.3.2 "Simple").

    The map is normalised by the affine min-max map onto [0, 1] (min -> 0, max -> 1). The
    initial threshold is the mean of all normalised values. Each iteration splits the pixels
    into "above the threshold" and "at or below it" and sets the new threshold to the average
    of the two class means; it stops when the threshold moves by less than ``tol`` or after
    ``max_iter`` updates. This is the automatic thresholding of Umbaugh (2017) cited by the
    seed. The foreground is the pixels strictly above the final threshold.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor, shape (H, W)
        Raw relevance map, any real dtype, may be signed.
    tol : float, default 1e-6
        Convergence tolerance on the threshold, in normalised ([0, 1]) units.
    max_iter : int, default 1000
        Largest number of threshold updates.
    return_threshold : bool, default False
        Also return the final threshold.

    Returns
    -------
    mask : numpy.ndarray of bool, shape (H, W)
        True for foreground. All False for a constant map.
    threshold : float
        Only if ``return_threshold``: the final threshold in the units of ``relevance``
        (mapped back from [0, 1]), so ``mask == (relevance > threshold)`` up to rounding. For a
        constant map it is that constant.

    Raises
    ------
    ValueError
        If ``relevance`` is not a finite, non-empty 2-D real map, ``tol`` is not > 0 or
        ``max_iter`` is not an integer >= 1.
    """
    array = _relevance_array(relevance)
    tol = check_number(tol, "tol", 0, open_low=True)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    low, high = float(array.min()), float(array.max())
    if low == high:
        mask = np.zeros(array.shape, dtype=bool)
        return (mask, low) if return_threshold else mask
    normalised = normalize_map(array)
    threshold = _isodata_threshold(normalised.ravel(), tol, max_iter)
    mask = normalised > threshold
    if return_threshold:
        return mask, low + threshold * (high - low)
    return mask


# --------------------------------------------------------------------------- GMM


def gmm_segmentation(relevance, seed: int = 0, n_components: int = 3, select: str = "max_value"):
    """Segment a relevance map with a Gaussian mixture (seed 003, 3.3.2 "GMM").

    Steps:

    1. a 5 x 5 mean filter (:func:`scipy.ndimage.uniform_filter`, border mode ``"reflect"``:
       the map mirrored about its edge) smooths single-pixel peaks;
    2. the filtered values are min-max normalised to [0, 1]. The seed does not normalise; this
       step does not change the fitted partition except through scikit-learn's fixed
       covariance regulariser (``reg_covar=1e-6``), which would otherwise dominate maps whose
       raw relevance is tiny (LRP values of order 1e-5 are common);
    3. a :class:`sklearn.mixture.GaussianMixture` with ``n_components`` components
       (default three, as in the seed), k-means initialisation (``init_params="kmeans"``) and
       ``random_state=seed`` is fitted to the 1-D values, with no spatial information;
    4. the foreground component is the one with the largest posterior probability
       (responsibility) at the largest filtered value (``select="max_value"``, the seed's
       rule); the foreground is every pixel whose posterior for that component is > 0.5.

    A known weakness of the seed's rule: the largest value usually lies in the far tail of
    the distribution, where a wide component (for instance one fitted to the transition
    between background and foreground that the filter creates) can be more probable than the
    narrow foreground component, so the "foreground" becomes that transition band.
    ``select="max_mean"`` (not in the seed) takes the component with the largest mean instead.

    If the filtered map has fewer distinct values than ``n_components``, one component per
    distinct value is used.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor, shape (H, W)
        Raw relevance map, any real dtype, may be signed.
    seed : int, default 0
        ``random_state`` of the mixture (k-means initialisation); same seed, same mask.
    n_components : int, default 3
        Number of Gaussian components.
    select : {"max_value", "max_mean"}, default "max_value"
        How the foreground component is chosen: most probable at the largest value (seed 003)
        or largest mean.

    Returns
    -------
    mask : numpy.ndarray of bool, shape (H, W)
        True for foreground. All False for a constant map (or one whose filtered map is
        constant).

    Raises
    ------
    ValueError
        If ``relevance`` is not a finite, non-empty 2-D real map, ``n_components`` is not an
        integer >= 1, ``seed`` is not an integer or ``select`` is not one of the two rules.
    """
    array = _relevance_array(relevance)
    n_components = check_int(n_components, "n_components", minimum=1)
    if not isinstance(select, str) or select not in ("max_value", "max_mean"):
        raise ValueError(f"select: expected 'max_value' or 'max_mean', got {select!r}")
    seed = check_int(seed, "seed")
    filtered = _mean_filter(array)
    if array.min() == array.max() or filtered.min() == filtered.max():
        return np.zeros(array.shape, dtype=bool)
    values = normalize_map(filtered).reshape(-1, 1)
    n_components = min(n_components, np.unique(values).size)
    from sklearn.mixture import GaussianMixture  # scikit-learn loads slowly: only when used

    mixture = GaussianMixture(n_components=n_components, init_params="kmeans",
                              random_state=seed)
    mixture.fit(values)
    posterior = mixture.predict_proba(values)
    if select == "max_value":
        component = int(np.argmax(posterior[int(np.argmax(values[:, 0]))]))
    else:
        component = int(np.argmax(mixture.means_[:, 0]))
    return (posterior[:, component] > 0.5).reshape(array.shape)


# --------------------------------------------------------------------------- BMM


@dataclass(frozen=True)
class BetaMixtureFit:
    """Parameters of the two-component Beta mixture fitted by :func:`bmm_segmentation`.

    Component 0 is the background, component 1 the damage (foreground). The mixture works on
    ``x = (v - low) / (high - low)`` where ``v`` is the mean-filtered relevance with negatives
    set to zero; only pixels with ``v > cut`` take part. Both components have the same prior
    weight 1/2 (see :func:`bmm_segmentation`).

    Attributes
    ----------
    alpha, beta : numpy.ndarray, shape (2,)
        Beta parameters (background, damage). NaN when no mixture was fitted (fewer than two
        distinct kept values).
    n_iter : int
        EM iterations run (0 when no mixture was fitted).
    converged : bool
        Whether the component means and standard deviations moved by less than ``tol``.
    cut : float
        Filtered relevance at or below which pixels were dropped as background (the largest
        value of the dropped smaller half).
    low, high : float
        Filtered relevance mapped to 0 and to 1 (smallest and largest kept value).
    """

    alpha: np.ndarray
    beta: np.ndarray
    n_iter: int
    converged: bool
    cut: float
    low: float
    high: float

    @property
    def means(self) -> np.ndarray:
        """Means alpha / (alpha + beta) of the two components, shape (2,), on the [0, 1] scale."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def background_quantile(self) -> float:
        """The 0.9 quantile of the background component: below it, pixels are background."""
        return float(stats.beta.ppf(BACKGROUND_QUANTILE, self.alpha[0], self.beta[0]))


def _beta_moments(x: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted mean and variance of ``x``; ``weights`` sum to one."""
    mean = float(weights @ x)
    var = float(weights @ (x - mean) ** 2)
    return mean, var


def _beta_from_moments(mean: float, var: float) -> tuple[float, float]:
    """Method-of-moments Beta parameters for a mean in (0, 1) and a variance (clamped)."""
    mean = min(max(mean, BETA_EPS), 1.0 - BETA_EPS)
    var = min(max(var, BETA_MIN_VAR), mean * (1.0 - mean) * (1.0 - 1e-9))
    common = mean * (1.0 - mean) / var - 1.0
    return mean * common, (1.0 - mean) * common


def _bmm_m_step(x: np.ndarray, resp: np.ndarray, previous):
    """Weighted method of moments for both components; an empty component keeps its moments."""
    moments = []
    for k in range(2):
        total = resp[:, k].sum()
        if total > 0:
            moments.append(_beta_moments(x, resp[:, k] / total))
        else:
            moments.append(previous[k])
    if moments[0][0] > moments[1][0]:  # keep the damage component the one with the higher mean
        moments.reverse()
    return moments


def _beta_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """``log Beta(x; a, b)`` for ``x`` in (0, 1): ``scipy.stats.beta.logpdf`` without its
    per-call overhead (the EM calls it twice per iteration)."""
    return special.xlogy(a - 1.0, x) + special.xlog1py(b - 1.0, -x) - special.betaln(a, b)


def _bmm_e_step(x: np.ndarray, moments) -> np.ndarray:
    """Responsibilities (n, 2) with the seed's modified E-step; equal prior weights."""
    (a0, b0), (a1, b1) = (_beta_from_moments(*m) for m in moments)
    log_density = np.stack([_beta_logpdf(x, a0, b0), _beta_logpdf(x, a1, b1)], axis=1)
    top = log_density.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    density = np.exp(log_density - top)
    total = density.sum(axis=1, keepdims=True)
    resp = np.where(total > 0, density / np.where(total > 0, total, 1.0), 0.5)
    background = x < special.betaincinv(a0, b0, BACKGROUND_QUANTILE)  # the Beta's 0.9 quantile
    resp[background] = (1.0, 0.0)
    damage = x > a1 / (a1 + b1)
    resp[damage] = (0.0, 1.0)  # applied last: the damage rule wins where both hold
    return resp


def bmm_segmentation(relevance, max_iter: int = 100, tol: float = 1e-6, return_model: bool = False):
    """Segment a relevance map with a two-component Beta mixture (seed 003, 3.3.2 "BMM").

    Steps, as in the seed:

    1. the 5 x 5 mean filter of :func:`gmm_segmentation` (border mode ``"reflect"``);
    2. negative values are set to 0;
    3. the smallest 50 % of the values are dropped (the seed: damages always cover far less
       than half of the image). Concretely, with the ``H * W`` values sorted, ``cut`` is the
       value at rank ``H * W // 2`` (1-based) and only pixels with a value strictly above
       ``cut`` are kept, so values tied with the cut are dropped together. **Dropped pixels
       are background** in the returned mask;
    4. the kept values are mapped affinely onto [0, 1] (smallest kept value -> 0, largest
       -> 1) and clipped to [1e-6, 1 - 1e-6], where the Beta likelihood is finite;
    5. a mixture of a background and a damage Beta component is fitted by EM. It is
       initialised from the hard split of the Simple method (:func:`simple_segmentation`'s
       iterative mean threshold) on the kept values. Each iteration:

       * E-step: posteriors from the two Beta densities, then the seed's modifications:
         a value below the background component's 0.9 quantile (the lower one-sided 90 %
         interval, :func:`scipy.stats.beta.ppf`) is background with probability 1, and a value
         above the damage component's mean is damage with probability 1 (this rule is
         applied last, so it wins if both hold);
       * weighting: each component's responsibilities are divided by their sum over the
         pixels, so that every component carries a total weight of one (see below);
       * M-step: weighted method of moments, ``alpha = m c``, ``beta = (1 - m) c`` with
         ``c = m (1 - m) / v - 1`` for the weighted mean ``m`` and variance ``v`` (``v`` is
         clamped to [1e-8, m (1 - m))). The component with the higher mean stays the damage.

       It stops when no component mean or standard deviation moves by ``tol`` or more, or
       after ``max_iter`` iterations;
    6. the foreground is every kept pixel whose damage responsibility, from a final E-step
       (with the modifications), is > 0.5.

    Reading of the weighting. The seed says: "we weight the probabilities of each component by
    the sum of the component's probabilities", and that this "compensates the big differences
    in the number of relevant (damage) and non-relevant (background) pixels". Multiplying by
    the sum would do the opposite (favour the larger background), so the weighting is read as
    a division: the responsibilities ``r_ik`` of component ``k`` become ``r_ik / sum_i r_ik``.
    The weighted moments of the M-step are unchanged by this (they are normalised anyway), but
    the mixing weights, ``sum_i r_ik / sum_i r_ik`` per component, become equal: both
    components keep the prior weight 1/2 throughout, and a pixel's posterior is decided by the
    two densities alone, not by how many pixels each component holds. (Renormalising the
    per-pixel responsibilities after the division gives, at a fixed point of EM, the same
    posterior, so the two natural readings agree.)

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor, shape (H, W)
        Raw relevance map, any real dtype, may be signed.
    max_iter : int, default 100
        Largest number of EM iterations.
    tol : float, default 1e-6
        Convergence tolerance on the component means and standard deviations ([0, 1] scale).
    return_model : bool, default False
        Also return the fitted :class:`BetaMixtureFit`.

    Returns
    -------
    mask : numpy.ndarray of bool, shape (H, W)
        True for foreground. All False for a constant map, or when nothing is kept (more than
        half of the filtered values tie at the cut). When the kept values are all equal, no
        mixture can be fitted; they are the largest values and are all foreground.
    model : BetaMixtureFit
        Only if ``return_model``.

    Raises
    ------
    ValueError
        If ``relevance`` is not a finite, non-empty 2-D real map, ``max_iter`` is not an
        integer >= 1 or ``tol`` is not > 0.
    """
    array = _relevance_array(relevance)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_number(tol, "tol", 0, open_low=True)
    filtered = np.maximum(_mean_filter(array), 0.0)
    values = filtered.ravel()
    n = values.size
    mask = np.zeros(n, dtype=bool)
    nan2 = np.full(2, np.nan)

    def result(model):
        shaped = mask.reshape(array.shape)
        return (shaped, model) if return_model else shaped

    if array.min() == array.max():
        cut = float(values.max())
        return result(BetaMixtureFit(nan2, nan2.copy(), 0, False, cut, math.nan, math.nan))
    cut = float(np.partition(values, n // 2 - 1)[n // 2 - 1])  # n >= 2: the map is not constant
    kept = values > cut
    if not kept.any():
        return result(BetaMixtureFit(nan2, nan2.copy(), 0, False, cut, math.nan, math.nan))
    raw = values[kept]
    low, high = float(raw.min()), float(raw.max())
    if low == high:
        mask[kept] = True
        return result(BetaMixtureFit(nan2, nan2.copy(), 0, False, cut, low, high))

    x = np.clip((raw - low) / (high - low), BETA_EPS, 1.0 - BETA_EPS)
    split = x > _isodata_threshold(x, 1e-9, 1000)
    resp = np.stack([~split, split], axis=1).astype(np.float64)
    moments = _bmm_m_step(x, resp, previous=None)
    converged = False
    n_iter = 0
    while n_iter < max_iter and not converged:
        n_iter += 1
        resp = _bmm_e_step(x, moments)
        new = _bmm_m_step(x, resp, previous=moments)
        change = max(max(abs(new[k][0] - moments[k][0]), abs(math.sqrt(new[k][1]) - math.sqrt(moments[k][1])))
                     for k in range(2))
        moments = new
        converged = change < tol
    resp = _bmm_e_step(x, moments)
    mask[np.flatnonzero(kept)] = resp[:, 1] > 0.5
    params = [_beta_from_moments(*m) for m in moments]
    model = BetaMixtureFit(alpha=np.array([p[0] for p in params]), beta=np.array([p[1] for p in params]),
                           n_iter=n_iter, converged=converged, cut=cut, low=low, high=high)
    return result(model)


# --------------------------------------------------------------------------- sweep, dispatch


def threshold_sweep(relevance, ground_truth, thresholds=None, normalize: bool = True) -> dict:
    """Precision and recall of ``relevance > t`` over a sweep of thresholds ``t``.

    For precision-recall curves of a relevance map against a ground-truth mask (seed 003
    compares its segmentations with such curves).

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor, shape (H, W)
        Raw relevance map, any real dtype, may be signed.
    ground_truth : numpy.ndarray or torch.Tensor, shape (H, W)
        Reference mask; non-zero means foreground.
    thresholds : array_like of float, shape (T,), optional
        Thresholds to evaluate, in the order given. Default: 101 evenly spaced values over
        the range of the (normalised) map, ``numpy.linspace(0, 1, 101)`` when ``normalize``.
    normalize : bool, default True
        Threshold the min-max normalised map (values in [0, 1]; a constant map becomes all
        zeros) instead of the raw one. The thresholds are then in [0, 1] units.

    Returns
    -------
    dict
        ``"thresholds"``, ``"precision"``, ``"recall"``: float64 numpy arrays of shape (T,).
        Precision is TP / (TP + FP) and is defined as 1.0 where the prediction is empty;
        recall is TP / (TP + FN) and is defined as 1.0 where the ground truth is empty.

    Raises
    ------
    ValueError
        If ``relevance`` is not a finite, non-empty 2-D real map, ``ground_truth`` has another
        shape, or ``thresholds`` is not a non-empty 1-D array of finite numbers.
    """
    array = _relevance_array(relevance)
    if isinstance(ground_truth, torch.Tensor):
        truth = ground_truth.detach().cpu().numpy()
    else:
        truth = np.asarray(ground_truth)
    if truth.shape != array.shape:
        raise ValueError(f"ground_truth: expected the shape of relevance {tuple(array.shape)}, "
                         f"got {tuple(truth.shape)}")
    if truth.dtype.kind not in "biuf":
        raise ValueError(f"ground_truth: expected a bool or numeric mask, got dtype {truth.dtype}")
    truth = truth != 0
    if normalize:
        array = normalize_map(array)  # all zeros for a constant map
    if thresholds is None:
        thresholds = np.linspace(array.min(), array.max(), 101)
    else:
        try:
            thresholds = np.asarray(thresholds, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"thresholds: expected a 1-D array of numbers, got {thresholds!r}") from error
        if thresholds.ndim != 1 or thresholds.size == 0 or not np.isfinite(thresholds).all():
            raise ValueError("thresholds: expected a non-empty 1-D array of finite numbers, got "
                             f"shape {thresholds.shape}")
    order = np.argsort(array.ravel(), kind="stable")
    values = array.ravel()[order]
    # cumulative[i]: foreground pixels among the i smallest values
    cumulative = np.concatenate([[0], np.cumsum(truth.ravel()[order])])
    total_truth = int(cumulative[-1])
    first_above = np.searchsorted(values, thresholds, side="right")  # values[i:] > t
    predicted = values.size - first_above
    true_positive = total_truth - cumulative[first_above]
    precision = np.where(predicted > 0, true_positive / np.maximum(predicted, 1), 1.0)
    recall = true_positive / total_truth if total_truth > 0 else np.ones_like(thresholds)
    return {"thresholds": thresholds.astype(np.float64), "precision": precision.astype(np.float64),
            "recall": np.asarray(recall, dtype=np.float64)}


def refine_mask(mask, radius: int = 1) -> np.ndarray:
    """Close a relevance mask, fill its holes and shrink it by ``radius`` pixels (not in seed 003).

    Relevance gathers on an object's border and leaves its inside near zero (seed 003, section
    4.1 and its Figure 9), so a thresholded map is often a broken outline; and the z^B rule of
    a first k x k convolution hands each pixel's relevance to its whole k x k window, so the
    map reaches (k - 1) / 2 pixels beyond the object. The refinement: a binary closing with a
    (2 radius + 1) square (joins outline pieces up to 2 radius pixels apart), hole filling, then
    an erosion by the same square (takes back ``radius`` pixels all round). Use the first
    convolution's half width: 1 for VGG's 3 x 3. Meant for masks of a few compact objects
    (defects); a speckled mask over much of the image closes into larger blocks.

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor, shape (H, W)
        Foreground mask; non-zero is foreground.
    radius : int, default 1
        Half width of the square structuring element; 0 returns the mask unchanged.

    Returns
    -------
    numpy.ndarray of bool, shape (H, W)
        The refined mask (a new array).

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D or not bool or numeric, or ``radius`` is not an integer >= 0.
    """
    radius = check_int(radius, "radius", minimum=0)
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise ValueError(f"mask: expected a 2-D bool or numeric array (H, W), got shape "
                         f"{array.shape} and dtype {array.dtype}")
    array = array != 0
    if radius == 0:
        return array
    square = np.ones((2 * radius + 1,) * 2, dtype=bool)
    # the erosions count the outside of the image as foreground: a mask that reaches the border
    # goes on beyond it, and only the ring inside the image is taken back
    closed = ndimage.binary_erosion(ndimage.binary_dilation(array, structure=square),
                                    structure=square, border_value=1)
    filled = ndimage.binary_fill_holes(closed)
    return ndimage.binary_erosion(filled, structure=square, border_value=1)


def segment(relevance, method: str, refine: int = 0, **options) -> np.ndarray:
    """Segment a relevance map with one of :data:`SEGMENTATION_METHODS` (seed 003, 3.3.2).

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor, shape (H, W)
        Raw relevance map, any real dtype, may be signed.
    method : {"simple", "gmm", "bmm"}
        :func:`simple_segmentation`, :func:`gmm_segmentation` or :func:`bmm_segmentation`.
    refine : int, default 0
        When > 0, the mask goes through :func:`refine_mask` with this radius (not in the
        seed; 1 for a first 3 x 3 convolution).
    **options
        Passed to that function (e.g. ``seed`` for "gmm", ``max_iter`` for "bmm").

    Returns
    -------
    numpy.ndarray of bool, shape (H, W)
        The foreground mask; if ``options`` asks for more (``return_threshold=True`` for
        "simple", ``return_model=True`` for "bmm"), that function's tuple is returned as is,
        its mask refined.

    Raises
    ------
    ValueError
        If ``method`` is not one of :data:`SEGMENTATION_METHODS`, ``refine`` is not an
        integer >= 0, or as raised by the method.
    """
    functions = {"simple": simple_segmentation, "gmm": gmm_segmentation, "bmm": bmm_segmentation}
    if not isinstance(method, str) or method not in functions:
        raise ValueError(f"method: expected one of {SEGMENTATION_METHODS}, got {method!r}")
    refine = check_int(refine, "refine", minimum=0)
    result = functions[method](relevance, **options)
    if not refine:
        return result
    if isinstance(result, tuple):
        return (refine_mask(result[0], refine), *result[1:])
    return refine_mask(result, refine)
