"""Packaging for dropclass: every field comes from settings.ini, the project's single source of metadata."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).parent / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

licenses = {"apache2": "Apache-2.0"}  # SPDX expressions (license classifiers are deprecated)
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
license_expression = licenses[cfg["license"]]
min_python = cfg["min_python"]
py_versions = [f"3.{v}" for v in range(int(min_python.split(".")[1]), 14)]


def _split(key):
    "Space-separated requirement list from settings.ini (an operator never contains a space)."
    return cfg.get(key, "").split()


console_scripts = [s for s in cfg.get("console_scripts", "").split("\n") if s.strip()]

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    license=license_expression,
    keywords=cfg["keywords"],
    classifiers=[
        f"Development Status :: {statuses[int(cfg['status']) - 1]}",
        f"Intended Audience :: {cfg['audience']}",
        f"Natural Language :: {cfg['language']}",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ]
    + [f"Programming Language :: Python :: {v}" for v in py_versions],
    python_requires=f">={min_python}",
    packages=setuptools.find_packages(include=["dropclass", "dropclass.*", "data_tools", "data_tools.*"]),
    include_package_data=True,
    install_requires=_split("requirements"),
    extras_require={"dev": _split("dev_requirements") + _split("docs_requirements"),  # the tests build the docs site
                    "explore": _split("explore_requirements"),
                    "docs": _split("docs_requirements")},
    entry_points={"console_scripts": console_scripts, "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
