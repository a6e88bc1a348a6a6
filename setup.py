"""Maps the top-level rooms onto one import namespace (docs/ARCHITECTURE.md, "Rooms and layers").

``sosm/`` is ``sosm``; ``graph/ kernels/ memory/ analysis/`` become ``sosm.graph``,
``sosm.kernels``, ``sosm.memory``, ``sosm.analysis``. Sub-packages are discovered, so a
new folder with an ``__init__.py`` needs no edit here.
"""
from setuptools import find_packages, setup

ROOMS = {"sosm": "sosm", "sosm.graph": "graph", "sosm.kernels": "kernels",
         "sosm.memory": "memory", "sosm.analysis": "analysis"}

packages, package_dir = [], {}
for name, folder in ROOMS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir,
      package_data={"sosm": ["assets/*"], "sosm.graph": ["assets/*", "*.c"], "sosm.analysis": ["assets/*"],
                    "sosm.kernels.selective_scan": ["*.c"]})  # the native CPU scan, compiled on first use
