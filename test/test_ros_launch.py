"""The launch file, read with stand-ins for ``launch`` / ``launch_ros`` (not installable from pip):
it declares ``use_sim_time``, ``namespace`` and a remapping argument for every topic of
``syncmv4d_ros.topics`` and the action, and passes them to the node."""

import sys
import types
from pathlib import Path

import pytest

from syncmv4d_ros import topics

ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_description(monkeypatch, tmp_path):
    modules = {name: types.ModuleType(name) for name in
               ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    modules["launch"].LaunchDescription = _Recorder
    modules["launch.actions"].DeclareLaunchArgument = _Recorder
    modules["launch.substitutions"].LaunchConfiguration = lambda name: ("config", name)
    modules["launch_ros.actions"].Node = _Recorder
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    import ament_index_python.packages as packages

    monkeypatch.setattr(packages, "get_package_share_directory", lambda package: str(tmp_path))
    namespace: dict = {}
    exec(compile((ROOT / "launch" / "generate.launch.py").read_text(), "generate.launch.py", "exec"), namespace)
    return namespace["generate_launch_description"]()


def test_launch_file_remaps_every_topic_and_takes_use_sim_time(launch_description):
    *arguments, node = launch_description.args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in arguments}
    assert {"params_file", "namespace", "use_sim_time", "log_level"} <= set(declared)
    assert declared["use_sim_time"] == "false"
    expected = dict(topics.TOPIC_PARAMETERS, action_name=topics.ACTION)
    assert {name: declared[name] for name in expected} == expected
    remappings = dict(node.kwargs["remappings"])
    assert remappings == {topic: ("config", name) for name, topic in expected.items()}
    assert all(not topic.startswith("/") for topic in remappings)  # relative: they follow the namespace
    assert node.kwargs["namespace"] == ("config", "namespace")
    assert {"use_sim_time": ("config", "use_sim_time")} in node.kwargs["parameters"]
    assert node.kwargs["executable"] == "syncmv4d-node" and node.kwargs["package"] == "syncmv4d_ros"
