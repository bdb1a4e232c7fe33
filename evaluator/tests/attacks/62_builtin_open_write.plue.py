# attack: open('/tmp/plue-attack-pwned', 'w') to write a file from the evaluator
# expect: forbidden

def workflow(ctx):
    with open("/tmp/plue-attack-pwned", "w") as fh:
        fh.write("pwned")
    leaked = "written"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
