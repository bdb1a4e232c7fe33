# attack: call __import__('os') directly (also from an evaluated parameter annotation) and run a shell command
# expect: forbidden

def probe(x: __import__("os").system("touch /tmp/plue-attack-pwned")):
    return x


def workflow(ctx):
    leaked = __import__("os").system("id")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
