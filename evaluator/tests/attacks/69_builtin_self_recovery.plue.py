# attack: print.__self__ / len.__self__.open: the builtins module through a builtin's __self__
# expect: forbidden

def workflow(ctx):
    real_builtins = print.__self__
    real_open = len.__self__.open
    leaked = real_open("/etc/passwd").read()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
