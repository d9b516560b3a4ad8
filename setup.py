"""Build gridhead: pure-Python packages plus Cython kernels from ext/.

Everything installs under the one import name ``gridhead``: the repository root is the package
``gridhead`` (its ``__init__.py`` and ``cli.py``), and the folders ``headend/ protocols/ billing_core/
storage/`` at the root are its subpackages, mapped by ``package_dir``.  Each ``ext/_X.pyx`` becomes the
module ``gridhead.<package>._X`` inside the package that uses it.  When Cython
or a C compiler is missing the build still succeeds and the pure-Python twins are used.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# ext/ source -> module inside the package that uses it
KERNELS = {
    "gridhead.protocols._framing": "ext/_framing.pyx",
    "gridhead.protocols._framing698": "ext/_framing698.pyx",
    "gridhead.protocols._axdr": "ext/_axdr.pyx",
    "gridhead.protocols._apdu698": "ext/_apdu698.pyx",
    "gridhead.billing_core._billing": "ext/_billing.pyx",
    "gridhead.headend._records698": "ext/_records698.pyx",
}


def extensions():
    if os.environ.get("GRIDHEAD_PUREPYTHON", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        return []
    exts = [Extension(mod, [src], extra_compile_args=["-O3"]) for mod, src in KERNELS.items()
            if os.path.exists(src)]
    return cythonize(exts, language_level=3, quiet=True)


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure twins in charge instead of failing the install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            print(f"warning: compiled kernels not built ({exc}); using the pure-Python twins")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: {ext.name} not built ({exc}); using its pure-Python twin")


class BuildPy(build_py):
    """The root folder is the package ``gridhead``: ship its ``__init__.py`` and ``cli.py``, not setup.py."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "gridhead" and m[1] == "setup")]


# every package under the four folders (headend.sim, billing_core.jobs, ...), found, not listed by hand
PACKAGES = find_packages(include=["headend", "headend.*", "protocols", "protocols.*", "billing_core",
                                  "billing_core.*", "storage", "storage.*"])

setup(
    name="gridhead",
    version="0.1.0",
    description="Meter data acquisition head-end (DL/T 645-2007, DL/T 698.45) and billing engine",
    python_requires=">=3.10",
    packages=["gridhead"] + [f"gridhead.{p}" for p in PACKAGES],
    package_dir={"gridhead": "."},
    package_data={"gridhead": ["py.typed"], "gridhead.protocols": ["*.pyi"], "gridhead.headend": ["*.pyi"],
                  "gridhead.billing_core": ["*.pyi", "tariffs/*.toml", "lineloss.toml"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPy},
    install_requires=[
        "click>=8.1,<9",
        "numpy>=1.26,<3",
        "pyarrow>=15,<25",
        "duckdb>=1.0,<2",
        "tqdm>=4.66,<5",  # progress bars of gridhead gen / archive import
        "uvloop>=0.19,<1; sys_platform != 'win32'",  # the head-end's event loop (falls back to asyncio)
        "prometheus-client>=0.20,<1",  # the head-end's /metrics
        "aiohttp>=3.9,<4",  # the control API's HTTP server (headend.control), on the head-end's loop
        "pyserial-asyncio>=0.6,<1",  # RS-485 meters wired to the head-end host (headend.transport_serial)
        "aiomqtt>=2.0,<3",  # concentrators publishing through an MQTT broker (headend.transport_mqtt)
        "dask[distributed]>=2024.1,<2027",  # the bill run on a Dask cluster, one task per lake bucket (billing_core.jobs.dist)
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-asyncio>=0.23,<2",
            "hypothesis>=6.100,<7",
            "dlt645>=3.2,<4",  # independent DL/T 645 implementation, interop peer only
            "dlt698>=1.0,<2",  # independent DL/T 698.45 implementation (C++), interop peer only
            "nrel-pysam>=5,<8",  # NREL PySAM Utilityrate5: independent tariff oracle for the billing tests
            "moto[server]>=5.0,<6",  # a real S3-compatible server process on 127.0.0.1 for the lake-URI tests
            "cryptography>=41,<50",  # certificates made in the control API's TLS tests
            "mypy>=1.20,<2",  # tests/protocols/test_typing.py: gridhead.protocols checks clean under --strict
        ],
    },
    entry_points={"console_scripts": ["gridhead=gridhead.cli:main"]},
)
