"""Copy RIM-ONE DL with every crop (and its masks) padded black to FACTOR x its side (diagnostic)."""
import sys, os, glob, cv2, numpy as np
src='/work/shared/data/RIM-ONE_DL'; f=float(sys.argv[1]); dst=sys.argv[2]
for p in glob.glob(src+'/**/*.png', recursive=True):
    im=cv2.imread(p, cv2.IMREAD_UNCHANGED); h,w=im.shape[:2]
    py,px=int(round((f-1)*h/2)),int(round((f-1)*w/2))
    out=cv2.copyMakeBorder(im,py,py,px,px,cv2.BORDER_CONSTANT,value=0)
    q=dst+p[len(src):]; os.makedirs(os.path.dirname(q),exist_ok=True); cv2.imwrite(q,out)
