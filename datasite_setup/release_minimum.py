"""The release minimum: the fewest training (and validation) samples from which a site releases anything.

One number shared by the converter, which warns when it writes a client below it,
and the site's policy, whose ``[release] min_samples`` defaults to it. It lives in
the shared layer because the converter may not import ``policies``.

Examples
--------
>>> from datasite_setup.release_minimum import RELEASE_MIN_SAMPLES
>>> RELEASE_MIN_SAMPLES
20
"""

from __future__ import annotations

RELEASE_MIN_SAMPLES = 20
"""Default of ``[release] min_samples``: a site with fewer training or validation samples releases nothing."""
