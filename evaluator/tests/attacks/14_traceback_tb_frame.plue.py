# attack: except Exception as e: e.__traceback__.tb_frame.f_back.f_globals
# expect: forbidden

def workflow(ctx):
    try:
        1 / 0
    except Exception as e:
        caller = e.__traceback__.tb_frame.f_back
        leaked = caller.f_globals.get("__builtins__")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
