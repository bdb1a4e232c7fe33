# attack: f-string expression f'{ctx.__class__.__init__.__globals__}'
# expect: forbidden

def workflow(ctx):
    leaked = f"{ctx.__class__.__init__.__globals__}"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
