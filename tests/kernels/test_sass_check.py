"""The register-operand race check (sass_check.register_a_races) on hand-written SASS: the race of the first register
form of the INT4 wgmma tile (a loop with one register set), and the two-set loop that replaces it."""
from .sass_check import register_a_races, written

ONE_SET = """
.L_x_1:
        /*0100*/                   LDS.128 R20, [R0+UR5] ;
        /*0110*/                   LOP3.LUT R56, R20, 0xf000f, R2, 0xea, !PT ;
        /*0120*/                   WARPGROUP.ARRIVE ;
        /*0130*/                   HGMMA.64x64x16.F32.BF16 R24, R56, gdesc[UR20], R24, gsb0 ;
        /*0140*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0150*/              @P0 BRA `(.L_x_1) ;
        /*0160*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0170*/                   EXIT ;
"""

TWO_SETS = """
.L_x_1:
        /*0100*/                   LOP3.LUT R56, R20, 0xf000f, R2, 0xea, !PT ;
        /*0110*/                   HGMMA.64x64x16.F32.BF16 R24, R56, gdesc[UR20], R24, gsb0 ;
        /*0120*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0130*/                   LOP3.LUT R60, R20, 0xf000f, R2, 0xea, !PT ;
        /*0140*/                   HGMMA.64x64x16.F32.BF16 R24, R60, gdesc[UR20], R24, gsb0 ;
        /*0150*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0160*/              @P0 BRA `(.L_x_1) ;
        /*0170*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0180*/                   IMAD.MOV.U32 R57, RZ, RZ, R3 ;
        /*0190*/                   EXIT ;
"""


def test_one_register_set_in_a_loop_is_a_race():
    # around the back edge, the next step's LOP3 writes R56 while the last step's HGMMA (one group outstanding after
    # DEPBAR.LE 1) still reads R56..R59
    groups, races = register_a_races(ONE_SET)
    assert groups == 1
    assert [r[1] for r in races] == ["LOP3.LUT R56, R20, 0xf000f, R2, 0xea, !PT"] and races[0][2] == [56]


def test_two_register_sets_alternating_are_not():
    # each set is rewritten only after the next group's DEPBAR.LE 1 (or the final DEPBAR.LE 0) retired its reader;
    # the write to R57 after DEPBAR.LE 0 is after every retirement
    assert register_a_races(TWO_SETS) == (2, [])


def test_shared_a_groups_are_not_counted():
    assert register_a_races(ONE_SET.replace("R24, R56, gdesc", "R24, gdesc[UR8], gdesc")) == (0, [])


def test_written_registers_by_width():
    assert written("LDS.128 R20, [R0+UR5]") == {20, 21, 22, 23}
    assert written("@P1 IMAD.WIDE.U32 R8, R2, R3, RZ") == {8, 9}
    assert written("LDSM.16.M88.4 R116, [R4+UR8]") == {116, 117, 118, 119}
    assert written("STS.128 [R3], R8") == written("UIADD3 UR5, UR4, 0x1, URZ") == written("BAR.SYNC 0x0") == set()
