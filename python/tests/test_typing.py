# SPDX-License-Identifier: MIT
"""Signatures and stubs: inspect.signature works on every public callable,
and sealstore/__init__.pyi names exactly what the module has, with the same
parameters, so the two cannot drift apart."""
import ast
import inspect
import os
import pydoc

import pytest

import sealstore

STUB = os.path.join(os.path.dirname(sealstore.__file__), "__init__.pyi")
CLASSES = ("Client", "Ref", "ObjectView", "Explanation")


def public(name):
    return not name.startswith("_")


def runtime_members(cls):
    """Public names a class defines itself (not those of object/dict/OSError)."""
    inherited = set()
    for base in cls.__mro__[1:]:
        if base.__module__ in ("builtins",):
            inherited |= set(dir(base))
    return {n for n in dir(cls) if public(n) and n not in inherited}


def stub_tree():
    with open(STUB) as f:
        return ast.parse(f.read())


def stub_defs(body):
    """{name: node} for the public functions, classes and annotated names."""
    out = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.setdefault(node.name, node)  # first @overload
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return {n: v for n, v in out.items() if public(n) or n == "__version__"}


def stub_params(fn):
    a = fn.args
    kinds = ([(x.arg, "POSITIONAL_ONLY") for x in a.posonlyargs]
             + [(x.arg, "POSITIONAL_OR_KEYWORD") for x in a.args]
             + [(x.arg, "KEYWORD_ONLY") for x in a.kwonlyargs])
    if a.vararg:
        kinds.append((a.vararg.arg, "VAR_POSITIONAL"))
    return [(n, k) for n, k in kinds if n != "self" and public(n)]


def runtime_params(obj):
    sig = inspect.signature(obj)
    return [(p.name, p.kind.name) for p in sig.parameters.values()
            if p.name != "self" and public(p.name)]


def public_callables():
    for name in sealstore.__all__:
        obj = getattr(sealstore, name)
        if callable(obj) and not (isinstance(obj, type) and issubclass(obj, BaseException)):
            yield name, obj
    for cname in CLASSES:
        cls = getattr(sealstore, cname)
        for m in sorted(runtime_members(cls)):
            attr = inspect.getattr_static(cls, m)
            if callable(attr) and not isinstance(attr, property):
                yield "%s.%s" % (cname, m), getattr(cls, m)


@pytest.mark.parametrize("name, obj", list(public_callables()), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_every_public_callable_has_a_signature(name, obj):
    sig = inspect.signature(obj)  # raises ValueError without a text signature
    assert sig is not None


def test_module_names_match_the_stub():
    stub = set(stub_defs(stub_tree().body))
    exported = set(sealstore.__all__)
    assert stub == exported, ("in the stub only: %s; in the module only: %s"
                              % (sorted(stub - exported), sorted(exported - stub)))
    # and __all__ is every public name of the module (submodules aside)
    mod = {n for n in dir(sealstore) if public(n) and not inspect.ismodule(getattr(sealstore, n))}
    assert mod == exported - {"__version__"}


@pytest.mark.parametrize("cname", CLASSES)
def test_class_members_match_the_stub(cname):
    node = stub_defs(stub_tree().body)[cname]
    stub = set(stub_defs(node.body))
    have = runtime_members(getattr(sealstore, cname))
    assert stub == have, ("%s: in the stub only: %s; in the module only: %s"
                          % (cname, sorted(stub - have), sorted(have - stub)))


def stub_functions():
    defs = stub_defs(stub_tree().body)
    for name, node in defs.items():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield name, node, getattr(sealstore, name)
        elif isinstance(node, ast.ClassDef) and name in CLASSES:
            cls = getattr(sealstore, name)
            for mname, m in stub_defs(node.body).items():
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not any(
                        isinstance(d, ast.Name) and d.id == "property" for d in m.decorator_list):
                    yield "%s.%s" % (name, mname), m, getattr(cls, mname)
            init = [m for m in node.body if isinstance(m, ast.FunctionDef) and m.name == "__init__"]
            if init:
                yield name + "()", init[0], cls


@pytest.mark.parametrize("name, node, obj", list(stub_functions()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_stub_parameters_match(name, node, obj):
    assert stub_params(node) == runtime_params(obj), name


def test_help_leads_with_the_three_calls():
    doc = sealstore.__doc__
    assert len(doc.splitlines()) <= 20
    for call in ("sealstore.connect(", ".put_ref(", ".get("):
        assert call in doc
    text = pydoc.render_doc(sealstore, renderer=pydoc.plaintext)
    head = "\n".join(text.splitlines()[:15])
    assert "The three calls most people need" in head


def test_py_typed_is_shipped():
    assert os.path.exists(os.path.join(os.path.dirname(sealstore.__file__), "py.typed"))
