# attack: patch a function's __code__ (co_names) so a harmless-looking helper calls open()
# expect: forbidden

def helper():
    return nope("/tmp/plue-attack-pwned", "w")


def workflow(ctx):
    code = helper.__code__
    names = tuple("open" if n == "nope" else n for n in code.co_names)
    helper.__code__ = code.replace(co_names=names)
    leaked = helper()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
