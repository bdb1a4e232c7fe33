# attack: getattr(e, '__trace' + 'back__') then tb_frame via computed names
# expect: forbidden

def workflow(ctx):
    try:
        [][1]
    except IndexError as e:
        tb = getattr(e, "__trace" + "back__")
        frame = getattr(tb, "tb" + "_frame")
        leaked = getattr(frame, "f" + "_globals")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
