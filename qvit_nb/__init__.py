__version__ = "0.1.0"

# `import qvit_nb` registers the compact transformers (vit_6_4_32, cct_7_3x1_32, ...) in timm's registry. Registering
# needs timm and torch, which take seconds to import; the `qvit` command imports this package before it parses its
# arguments (`qvit --help` must answer at once), so registration happens when timm is first imported: now, if it
# already is, else right after `import timm` finishes. Either way nobody can call `timm.create_model` before it.
import importlib.abc as _abc, importlib.util as _util, sys as _sys


def _register_models():
    from . import models  # noqa: F401


class _RegisterAfterTimm(_abc.MetaPathFinder):
    "Import hook: once `timm` has been imported, import `qvit_nb.models` (which registers our models)."
    def find_spec(self, name, path=None, target=None):
        if name != 'timm': return None
        _sys.meta_path.remove(self)                      # one shot; also keeps the look-up below from finding us
        spec = _util.find_spec('timm')
        if spec is None or spec.loader is None: return spec
        exec_module = spec.loader.exec_module
        def exec_then_register(module):
            exec_module(module)
            _register_models()
        spec.loader.exec_module = exec_then_register
        return spec


if 'timm' in _sys.modules: _register_models()
elif not any(isinstance(f, _RegisterAfterTimm) for f in _sys.meta_path): _sys.meta_path.insert(0, _RegisterAfterTimm())
