import CLibDW
