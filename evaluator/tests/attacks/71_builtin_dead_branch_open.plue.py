# attack: bind 'open' in a dead branch so the name is 'file-bound', then call it expecting the real builtin
# expect: error

if False:
    open = None


def workflow(ctx):
    with open("/tmp/plue-attack-pwned", "w") as fh:
        fh.write("pwned")
    leaked = "written"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
