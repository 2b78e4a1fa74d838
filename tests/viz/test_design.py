"""Design (issue 21, item 6): a module family owns how its weights are read off; viz keeps the generic parts."""

import ast
import inspect
from pathlib import Path

import segattn
from segattn.registry import MODULES, UPSAMPLERS
from segattn.viz.weights import supports_pixel_weights

VIZ = Path(segattn.__file__).parent / "viz"


def test_viz_imports_no_private_helper_of_a_module_file():
    for path in VIZ.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segattn.modules"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_every_weight_map_lives_beside_its_module():
    names = [n for n in MODULES.list() if supports_pixel_weights(n)] + ["carafe"]
    assert len(names) >= 29
    for name in names:
        cls = (UPSAMPLERS if name == "carafe" else MODULES).get(name)
        where = Path(inspect.getsourcefile(cls.weight_maps))
        assert where.parent.name == "modules", f"{name}: weight_maps defined in {where}"
