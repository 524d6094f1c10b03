"""The public API is typed (``py.typed`` ships): every public function and every public method
of a public class in the package has annotated parameters or return."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_iresnet"


def _annotated(function):
    arguments = function.args
    parameters = arguments.posonlyargs + arguments.args + arguments.kwonlyargs
    if parameters and parameters[0].arg in ("self", "cls"):
        parameters = parameters[1:]
    for extra in (arguments.vararg, arguments.kwarg):
        if extra is not None:
            parameters.append(extra)
    return function.returns is not None and all(p.annotation is not None for p in parameters)


def _public_functions(tree):
    """(qualified name, node) of module-level functions and methods of public classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{item.name}", item


def test_every_public_function_is_annotated():
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for name, function in _public_functions(tree):
            short = name.rsplit(".", 1)[-1]
            if short.startswith("_") and short != "__init__":
                continue
            if not _annotated(function):
                missing.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert not missing, "unannotated public functions:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_annotation():
    source = "def f(x):\n    pass\nclass A:\n    def g(self, y: int) -> int:\n        pass\n"
    tree = ast.parse(source)
    found = {name: _annotated(node) for name, node in _public_functions(tree)}
    assert found == {"f": False, "A.g": True}
