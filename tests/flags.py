"""Turn a dict of config keys into `qvit train` flags (the tests drive the CLI the way users do)."""


def cli_flags(d: dict) -> list:
    out = []
    for k, v in d.items():
        flag = '--' + k.replace('_', '-')
        if isinstance(v, bool): out.append(flag if v else '--no-' + k.replace('_', '-'))
        elif v is None: out.append('--no-' + k.replace('_', '-'))
        elif isinstance(v, list): out += [flag, *map(str, v)]
        else: out += [flag, str(v)]
    return out
