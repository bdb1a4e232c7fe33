# attack: print a forged success payload on stdout (the worker's channel) and raise SystemExit(0)
# expect: error

def workflow(ctx):
    print('{"ok": true, "plan": {"name": "spoofed", "triggers": [], "steps": []}}')
    raise SystemExit(0)
