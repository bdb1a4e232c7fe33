# attack: def workflow(ctx, eval=eval): bind the forbidden name as a parameter so the AST check lets its default through
# expect: error

def workflow(ctx, eval=eval):
    leaked = eval("__import__('os').system('touch /tmp/plue-attack-pwned')")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
