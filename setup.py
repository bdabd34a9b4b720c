"""Packaging hook (everything else is in pyproject.toml): which folders a wheel carries.

- ``conf/`` (the Hydra configs) stays at the repository root, the visible source of truth, and ships as
  ``failfast_bench/conf`` (found by ``failfast_bench.paths.conf_dir``). Package discovery cannot map a folder
  outside ``src/`` into the package, hence this file.
- ``src/failfast_bench/shipped`` (the trained drafters) ships as is.

Data folders are listed as (namespace) packages, found anew at every build, so a new config group or shipped
drafter needs no edit here.
"""
from setuptools import find_namespace_packages, find_packages, setup

CONF = "failfast_bench.conf"
SHIPPED = "failfast_bench.shipped"
conf_packages = [CONF] + [f"{CONF}.{name}" for name in find_namespace_packages("conf")]
shipped_packages = [SHIPPED] + [f"{SHIPPED}.{name}" for name in find_namespace_packages("src/failfast_bench/shipped")]

setup(
    packages=find_packages("src") + conf_packages + shipped_packages,
    package_dir={"": "src", CONF: "conf"},
    package_data={**{name: ["*.yaml"] for name in conf_packages}, **{name: ["*"] for name in shipped_packages}},
)
