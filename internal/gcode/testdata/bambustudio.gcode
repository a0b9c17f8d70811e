; HEADER_BLOCK_START
; BambuStudio 01.09.00.70
; model printing time: 1h 4m 24s; total estimated time: 1h 10m 52s
; total layer number: 2
; total filament length [mm] : 1234.56
; total filament volume [cm^3] : 2969.3
; total filament weight [g] : 3.68
; filament_density: 1.24
; filament_diameter: 1.75
; max_z_height: 0.40
; HEADER_BLOCK_END

; THUMBNAIL_BLOCK_START
; thumbnail begin 48x48 232
; iVBORw0KGgoAAAANSUhEUgAAADAAAAAwCAIAAADYYG7QAAAAdUlEQVR4nOySMQrFMAzFPPj/c/foJX
; R/jw4FDRIhZMggLO/M9Zt5zv/N46P/ey4SCjX21CMBnBBOyGQZoJDJMkAhk2WAQibLKNRwhxpAIZNl
; gEImywCFTJYBCpkso1DDHWoAhUyWAQqZLAMUMlkGJ3QHAAD//3veAzMrE2I0AAAAAElFTkSuQmCC
; thumbnail end
; THUMBNAIL_BLOCK_END

; CONFIG_BLOCK_START
; filament_type = PLA
; initial_layer_print_height = 0.2
; layer_height = 0.2
; nozzle_diameter = 0.4
; CONFIG_BLOCK_END

; EXECUTABLE_BLOCK_START
M73 P0 R70
M201 X20000 Y20000 Z500 E5000
G28
M83
; CHANGE_LAYER
; Z_HEIGHT: 0.2
; LAYER_HEIGHT: 0.2
G1 Z.2 F1200
G1 X100 Y100 E1 F3000
; CHANGE_LAYER
; Z_HEIGHT: 0.4
; LAYER_HEIGHT: 0.2
G1 Z.4
G1 X120 Y100 E1
G1 Z.8 F1200
; EXECUTABLE_BLOCK_END
