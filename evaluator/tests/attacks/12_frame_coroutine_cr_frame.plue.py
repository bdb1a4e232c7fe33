# attack: create a coroutine and walk cr_frame.f_back.f_globals (async def)
# expect: forbidden

async def probe():
    return 1


def workflow(ctx):
    c = probe()
    leaked = c.cr_frame.f_back.f_globals
    c.close()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
