"""How the tests drive the `qvit` command the way users do: a dict of config keys as `qvit train` flags, and the
environment of the `qvit` subprocesses."""
import os

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}    # one thread each; lines arrive as printed


def cli_flags(d: dict) -> list:
    out = []
    for k, v in d.items():
        flag = '--' + k.replace('_', '-')
        if isinstance(v, bool): out.append(flag if v else '--no-' + k.replace('_', '-'))
        elif v is None: out.append('--no-' + k.replace('_', '-'))
        elif isinstance(v, list): out += [flag, *map(str, v)]
        else: out += [flag, str(v)]
    return out
