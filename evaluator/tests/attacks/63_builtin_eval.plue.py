# attack: eval() of a string that performs a dunder walk invisible to the AST check
# expect: forbidden

def workflow(ctx):
    leaked = eval("1") + len(eval("().__class__.__base__.__subclasses__()"))
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
