#!/usr/bin/env python3
"""Lists pairs of modules in src/ that import each other (crate:: and super:: paths outside
#[cfg(test)], doc links included): issue 20's target is none. `top` compares top-level
modules only. usage: scripts/cycles.py [top]"""
import re,pathlib,itertools,sys
root=pathlib.Path('src')
def modname(p):
    rel=p.relative_to(root).with_suffix('')
    parts=list(rel.parts)
    if parts[-1] in('mod','lib','main'): parts=parts[:-1]
    return '::'.join(parts)
mods={modname(p):p for p in root.rglob('*.rs')}
edges={}
for m,p in mods.items():
    txt=p.read_text()
    txt=txt.split('#[cfg(test)]')[0]
    deps=set()
    for u in re.findall(r'crate::([\w:]+)',txt):
        parts=u.split('::')
        # longest module prefix
        for k in range(len(parts),0,-1):
            c='::'.join(parts[:k])
            if c in mods: deps.add(c);break
    # super::
    for u in re.findall(r'super::(\w+)',txt):
        base=m.rsplit('::',1)[0] if '::' in m else ''
        if p.name=='mod.rs': base=m.rsplit('::',1)[0] if '::' in m else ''
        c=(base+'::'+u) if base else u
        if c in mods: deps.add(c)
    deps.discard(m)
    edges[m]=deps
lvl=sys.argv[1] if len(sys.argv)>1 else 'file'
def top(x): return x.split('::')[0]
if lvl=='top':
    E={}
    for a,ds in edges.items():
        for d in ds:
            if top(a)!=top(d): E.setdefault(top(a),set()).add(top(d))
    edges=E
seen=set()
for a,ds in edges.items():
    for b in ds:
        if a in edges.get(b,()) and (b,a) not in seen:
            seen.add((a,b)); print(a,'<->',b)
