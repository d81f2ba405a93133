"""ament_python package that also installs with plain pip (see README for the extras)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "structalign_ros"


def _files(pattern: str) -> list[str]:
    return sorted(f for f in glob(pattern) if not f.endswith(".md"))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", _files("config/*.yaml")),
        (f"share/{PACKAGE}/models", _files("models/*")),
    ],
    python_requires=">=3.10",
    # torch is deliberately not pinned here: `make setup` installs torch==2.13.0 first, and a robot
    # with CUDA keeps the build it already has.
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pyyaml>=6",
        "torch>=2.3",
        "pot>=0.9.5",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "onnx>=1.16",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        # torch.utils.tensorboard writes event files through it (structalign train)
        "tensorboard>=2.14",
    ],
    extras_require={
        # PyPI wheels of ROS 2 Kilted, for machines without a ROS 2 install.
        "ros": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-std-msgs",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-visualization-msgs",
            "ros-diagnostic-msgs",
            "ros-lifecycle-msgs",
            "ros-rosgraph-msgs",
        ],
        # onnxruntime and onnxruntime-gpu install the same module: pick exactly one of these two.
        "cpu": ["onnxruntime>=1.18"],
        "gpu": ["onnxruntime-gpu>=1.18"],
        "sim": ["mujoco>=3.1"],
        "dev": ["pytest>=8", "ruff>=0.6", "colcon-common-extensions>=0.3", "tck>=1.0"],
    },
    zip_safe=True,
    maintainer="structalign_ros maintainers",
    maintainer_email="maintainers@structalign.invalid",
    description="Multimodal robot perception with Gromov-Wasserstein structural alignment",
    license="Apache-2.0",
    tests_require=["pytest"],
    # `ros2 run structalign_ros <node>` finds these in lib/structalign_ros (setup.cfg).
    entry_points={
        "console_scripts": [
            "structalign = structalign_ros.cli:main",
            "perception_node = structalign_ros.ros.perception_node:main",
            "sim_node = structalign_ros.ros.sim_node:main",
        ]
    },
)
