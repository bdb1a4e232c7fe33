# attack: reach gi_frame / f_back through getattr with computed names ('gi_' + 'frame')
# expect: forbidden

holder = []


def spy():
    frame = getattr(holder[0], "gi" + "_frame")
    back = getattr(frame, "f" + "_back")
    yield getattr(back, "f_" + "globals")


def workflow(ctx):
    g = spy()
    holder.append(g)
    leaked = next(g)
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
