# attack: get a host path of the standard library echoed back (an existence oracle)
# expect: error

import json

def workflow(ctx):
    raise ValueError("/usr/lib/python3.11/json/decoder.py " + repr(json.dumps))
