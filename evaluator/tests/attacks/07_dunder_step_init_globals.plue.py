# attack: Step.__init__.__globals__ to read the plue implementation module's globals
# expect: forbidden

def workflow(ctx):
    impl_globals = Step.__init__.__globals__
    leaked = sorted(impl_globals)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
