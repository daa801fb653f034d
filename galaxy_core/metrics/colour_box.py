"""Reading the colour–magnitude acceptance-box fraction against the real one.

The box is the real galaxies' median ± :data:`BOX_NSIGMA` standard deviations in absolute
magnitude and colour (the StyleGAN galaxy thesis' acceptance test;
:func:`galaxy_core.metrics.photometry.acceptance_box`). A generator is not better the more of
its galaxies fall inside: real galaxies not used to draw the box land inside at some rate, and
a generator whose fraction is far *above* that rate makes too narrow a range of colours and
luminosities (galaxies crowd the centre of the real distribution); far *below*, too broad or
offset a range.
"""

from __future__ import annotations

import math

__all__ = ["BOX_NSIGMA", "read_box_fraction"]

BOX_NSIGMA = 1.75  # half-width of the acceptance box in standard deviations of the real sample
Z_FAR = 2.0  # a difference of more than this many standard errors counts as "far"


def read_box_fraction(generated: float, real: float, *, n_generated: int, n_real: int) -> dict:
    """Compare the generated fraction inside the box with the held-out real fraction.

    Parameters
    ----------
    generated, real : float
        Fractions in [0, 1] of generated and of held-out real galaxies inside the box.
    n_generated, n_real : int
        Galaxies behind each fraction (> 0).

    Returns
    -------
    dict
        ``difference`` (generated − real), ``z`` (difference over the standard error of two
        binomial proportions with a pooled rate), ``reading`` (``"too narrow"``,
        ``"too broad or offset"`` or ``"consistent"``) and ``sentence``.

    Raises
    ------
    ValueError
        A count below 1 or a fraction outside [0, 1].
    """
    if n_generated < 1 or n_real < 1:
        raise ValueError(f"need galaxies in both sets, got {n_generated} generated and {n_real} real")
    if not (0 <= generated <= 1 and 0 <= real <= 1):
        raise ValueError(f"fractions must lie in [0, 1], got {generated} and {real}")
    pooled = (generated * n_generated + real * n_real) / (n_generated + n_real)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_generated + 1 / n_real))
    diff = generated - real
    z = diff / se
    if z > Z_FAR:
        reading = "too narrow"
        sentence = (f"{generated:.0%} of generated galaxies fall inside the box against {real:.0%} of real ones not used "
                    f"to draw it ({z:.1f} standard errors above): the generated colours and luminosities are too "
                    "narrow, crowding the centre of the real distribution.")
    elif z < -Z_FAR:
        reading = "too broad or offset"
        sentence = (f"{generated:.0%} of generated galaxies fall inside the box against {real:.0%} of real ones "
                    f"({-z:.1f} standard errors below): the generated colours and luminosities spread too widely or "
                    "sit off the real ones.")
    else:
        reading = "consistent"
        sentence = (f"{generated:.0%} of generated galaxies fall inside the box against {real:.0%} of real ones not "
                    "used to draw it: consistent at these sample sizes.")
    return {"difference": diff, "z": z, "reading": reading, "sentence": sentence}
