# attack: from plue import __builtins__ as real: a dunder name through an allowed import with an innocent alias
# expect: forbidden

from plue import __builtins__ as real


def workflow(ctx):
    leaked = real["open"]("/etc/passwd").read()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
