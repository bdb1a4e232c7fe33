# attack: hasattr(ctx, '__cl' + 'ass__') used as an oracle for hidden attributes
# expect: forbidden

def workflow(ctx):
    leaked = [n for n in ("__class__", "__dict__", "__globals__") if hasattr(ctx, n)]
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
