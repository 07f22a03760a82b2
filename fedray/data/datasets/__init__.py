"""Every dataset fedray ships, one folder each (:mod:`fedray.data.registry` says what a folder holds).

Importing this package registers their settings and metadata, and nothing
heavier: the config's ``COMPONENT_PACKAGES`` imports it before composing. A
dataset of one's own is a folder like these, registered the same way (and
imported before the config is composed, as a test does).
"""

# Each folder registers its dataset on import; this order is the order every message lists them in.
from fedray.data.datasets import isic  # noqa: F401, I001
from fedray.data.datasets import synthetic  # noqa: F401
from fedray.data.datasets import ehr_synthetic  # noqa: F401
from fedray.data.datasets import breast_cancer  # noqa: F401
from fedray.data.datasets import table  # noqa: F401
from fedray.data.datasets import image_csv  # noqa: F401
from fedray.data.datasets import fed_isic2019  # noqa: F401
