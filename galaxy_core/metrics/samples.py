"""Sample sizes of an evaluation, checked before any work is done.

A feature-space comparison fits a mean and a covariance to each set, so a set needs at least
two samples; with fewer samples than feature dimensions the covariance is singular and the FID
is biased upward by an amount that depends on the sample size (Chong & Forsyth 2020, CVPR,
"Effectively Unbiased FID"), so such values can be compared only at equal sizes, and KID
(unbiased at any size; Bińkowski et al. 2018) is the number to trust.
"""

from __future__ import annotations

from galaxy_core.errors import ConfigError

__all__ = ["MIN_SAMPLES", "check_sample_size", "feature_dimension", "sample_size_warnings"]

MIN_SAMPLES = 2  # a covariance and KID's unbiased within-set sums need two samples per set
FEATURE_DIMENSIONS = {"galaxy": 128, "inception": 2048}  # pix8: 64 per band


def feature_dimension(extractor: str, *, num_bands: int) -> int:
    """Length of the feature vectors of an extractor (``pix8``: 8 x 8 per band)."""
    return FEATURE_DIMENSIONS.get(extractor, 64 * num_bands)


def check_sample_size(n, *, option: str = "-n", minimum: int = MIN_SAMPLES, maximum: int | None = None) -> int:
    """``n`` as an int, or a :class:`ConfigError` that says which option to change and how.

    Parameters
    ----------
    n : int
        The requested count.
    option : str
        How the user gave it (``"-n"``, ``"--queries"``, a widget label), for the message.
    minimum, maximum : int
        Allowed range, inclusive (no upper limit when None).

    Raises
    ------
    ConfigError
        ``n`` is not a whole number or lies outside the range.
    """
    if isinstance(n, bool) or int(n) != n:
        raise ConfigError(f"{option} {n!r}: give a whole number of samples")
    n = int(n)
    if n < minimum:
        raise ConfigError(f"{option} {n}: need at least {minimum} samples (a covariance and KID need {MIN_SAMPLES} "
                          f"per set; 500 or more give stable values); use {option} 500")
    if maximum is not None and n > maximum:
        raise ConfigError(f"{option} {n}: at most {maximum} here; use {option} {maximum} or less")
    return n


def sample_size_warnings(n: int, *, n_real: int, extractors, num_bands: int, data_name: str) -> list[str]:
    """Why numbers at these sample sizes should be read with care (empty when they are fine).

    Parameters
    ----------
    n : int
        Generated samples requested.
    n_real : int
        Real images available in each of the two real samples (half the data at most).
    extractors : iterable of str
        Feature extractors used.
    num_bands : int
        Bands of the images (for ``pix8``'s dimension).
    data_name : str
        Name of the reference data, for the message.

    Returns
    -------
    list of str
        One sentence per problem.
    """
    out = []
    if n_real < n:
        out.append(f"{data_name} has room for only {n_real} real images per sample (two disjoint halves), so "
                   f"{n_real} generated samples are compared, not {n}")
    m = min(n, n_real)
    for name in extractors:
        dim = feature_dimension(name, num_bands=num_bands)
        if m < dim:
            out.append(f"{m} samples are fewer than the {dim} dimensions of the {name} features: the covariances "
                       f"are singular and fid_{name} is biased upward, comparable only at the same sample size; "
                       f"trust kid_{name} (unbiased) and use -n {dim} or more for the FID")
    return out
