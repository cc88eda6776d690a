"""Rule 11 of docs/lab/screen-cv.md: the Drishti-GS x2 mix against the equal mix on fold 0 (python verdict.py [seedN=per_image.csv ...])."""
import csv,statistics as st,sys
F=lambda r,k: float(r[k]) if r[k] else None
def summ(f):
    rows=list(csv.DictReader(open(f))); out={}
    for ds in ['drishti-gs','refuge','rim-one-dl']:
        s=[r for r in rows if r['dataset']==ds]
        ae=[F(r,'vcdr_ae') for r in s if r['vcdr_ae']]
        out[ds]=(st.mean(F(r,'dice_disc') for r in s),st.mean(F(r,'dice_cup') for r in s),st.mean(ae))
    return out
base={'seed0':'docs/lab/cv/screen/p0/per_image.csv','seed1':'docs/lab/cv/screen/meas7_fold0_seed1/per_image.csv','seed2':'docs/lab/cv/screen/meas7_fold0_seed2/per_image.csv'}
mix={'seed0':'docs/lab/cv/screen/rule5_fold0_drishti_weight2/per_image.csv',
     'seed1':'docs/lab/cv/screen/rule11_fold0_drishti_weight2/seed1_per_image.csv'}
for a in sys.argv[1:]: k,v=a.split('='); mix[k]=v
B={k:summ(v) for k,v in base.items()}; M={k:summ(v) for k,v in mix.items()}
for ds in ['drishti-gs','refuge','rim-one-dl']:
    for i,m in enumerate(['disc','cup','MAE']):
        b=[B[k][ds][i] for k in B]; x=[M[k][ds][i] for k in M]
        print(f'{ds:11s} {m:4s} equal {" / ".join(f"{v:.4f}" for v in b)}  mix {" / ".join(f"{v:.4f}" for v in x)} (mean {st.mean(x):.4f})')
bars=[('rim-one-dl',1,'>=',max(B[k]['rim-one-dl'][1] for k in B)+0.01),('rim-one-dl',2,'<=',max(B[k]['rim-one-dl'][2] for k in B)),
      ('drishti-gs',1,'>=',min(B[k]['drishti-gs'][1] for k in B)-0.005),('drishti-gs',2,'<=',max(B[k]['drishti-gs'][2] for k in B)+0.005),
      ('refuge',1,'>=',min(B[k]['refuge'][1] for k in B)-0.005),('refuge',2,'<=',max(B[k]['refuge'][2] for k in B)+0.005)]
ok=True
for ds,i,op,t in bars:
    v=st.mean(M[k][ds][i] for k in M); met=v>=t if op=='>=' else v<=t; ok&=met
    print(f'{ds} {["disc","cup","MAE"][i]} mean {v:.4f} {op} {t:.4f}: {"met" if met else "NOT met"}')
print('rule 11:', 'met' if ok else 'not met', f'({len(M)} runs of the mix)')
