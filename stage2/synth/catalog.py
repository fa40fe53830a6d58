"""Fixed tables the synthetic institution is drawn from: disciplines, profiles, names, rooms.

Everything here is plain data. :mod:`stage2.synth.generator` decides how much of it to use
and draws the random parts; changing a table here changes the generated institutions (and so
the bytes a seed produces), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------- identity / term

TENANT_ID = "TEN-DEMO"
#: the term every generated student is enrolled in (a fall term: odd semesters run)
ACADEMIC_YEAR = "2024-25"
#: first calendar year of ACADEMIC_YEAR; admission year of a semester-s student = this - (s-1)//2
TERM_START_YEAR = 2024
#: course registration window of the term (enrollment_date is drawn from it)
REGISTRATION_START = "2024-07-15"
REGISTRATION_DAYS = 21
EMAIL_DOMAIN = "student.example.edu"


# --------------------------------------------------------------------------- disciplines


@dataclass(frozen=True)
class Track:
    """An elective track: students who pick it take most of its electives."""

    code: str  # short upper-case code, part of course ids ("AI")
    name: str
    electives: tuple[str, ...]  # course names, used in order across the elective semesters


@dataclass(frozen=True)
class Discipline:
    """One degree programme as it is offered on one campus (the generator may add campuses)."""

    code: str  # programme code, part of program_id and course ids ("CSE")
    title: str  # programme name ("B.Tech Computer Science and Engineering")
    program_type: str  # "UG" or "PG"
    department: str  # department code; department_id = "DEPT-<department>"
    duration_years: int  # term semesters = the odd semesters 1, 3, ..., 2*duration - 1
    total_credits: int
    labs_per_semester: int  # PRACTICAL courses per semester, each paired with a core course
    lab_suffix: str  # "Laboratory" -> "Data Structures Laboratory"
    core: tuple[str, ...]  # core course names, used in order across the term semesters
    tracks: tuple[Track, ...]


_BTECH_FIRST_YEAR = (
    "Engineering Mathematics I",
    "Programming for Problem Solving",
    "Engineering Physics",
    "Basic Electrical Engineering",
)

CSE = Discipline(
    "CSE", "B.Tech Computer Science and Engineering", "UG", "CSE", 4, 160, 2, "Laboratory",
    _BTECH_FIRST_YEAR + (
        "Data Structures", "Discrete Mathematics", "Digital Logic Design",
        "Object Oriented Programming", "Operating Systems", "Database Management Systems",
        "Design and Analysis of Algorithms", "Computer Networks", "Compiler Design",
        "Software Engineering",
    ),
    (
        Track("AI", "Artificial Intelligence", (
            "Machine Learning", "Natural Language Processing", "Computer Vision",
            "Deep Learning", "Reinforcement Learning", "Knowledge Representation")),
        Track("SYS", "Systems", (
            "Distributed Systems", "Cloud Computing", "Computer Architecture",
            "Parallel Programming", "Storage Systems", "Virtualisation")),
        Track("CYB", "Security", (
            "Cryptography", "Network Security", "Ethical Hacking",
            "Secure Software Development", "Digital Forensics", "Blockchain Technologies")),
    ),
)

ECE = Discipline(
    "ECE", "B.Tech Electronics and Communication Engineering", "UG", "ECE", 4, 160, 2,
    "Laboratory",
    _BTECH_FIRST_YEAR + (
        "Electronic Devices", "Signals and Systems", "Network Analysis", "Digital Electronics",
        "Analog Communication", "Linear Integrated Circuits",
        "Microprocessors and Microcontrollers", "Digital Communication",
        "Antennas and Wave Propagation", "Digital Signal Processing",
    ),
    (
        Track("VLSI", "VLSI Design", (
            "CMOS VLSI Design", "Analog IC Design", "VLSI Testing", "FPGA Design",
            "Low Power VLSI", "Mixed Signal Design")),
        Track("COM", "Communication", (
            "Wireless Communication", "Optical Communication", "Satellite Communication",
            "Information Theory and Coding", "RF Engineering", "5G Networks")),
        Track("EMB", "Embedded Systems", (
            "Embedded System Design", "Real-Time Operating Systems", "Internet of Things",
            "Robotics", "Sensors and Actuators", "Automotive Electronics")),
    ),
)

ME = Discipline(
    "ME", "B.Tech Mechanical Engineering", "UG", "MECH", 4, 160, 2, "Laboratory",
    (
        "Engineering Mathematics I", "Engineering Physics", "Engineering Graphics",
        "Basic Electrical Engineering", "Engineering Mechanics", "Thermodynamics",
        "Strength of Materials", "Manufacturing Processes", "Fluid Mechanics",
        "Kinematics of Machinery", "Heat Transfer", "Design of Machine Elements",
        "Dynamics of Machinery", "Metrology and Measurements",
    ),
    (
        Track("THM", "Thermal Engineering", (
            "Internal Combustion Engines", "Refrigeration and Air Conditioning",
            "Computational Fluid Dynamics", "Renewable Energy Systems", "Gas Turbines",
            "Power Plant Engineering")),
        Track("DES", "Design", (
            "Finite Element Analysis", "Computer Aided Design", "Mechanical Vibrations",
            "Tribology", "Product Design", "Composite Materials")),
        Track("MFG", "Manufacturing", (
            "CNC Machining", "Additive Manufacturing", "Industrial Robotics",
            "Lean Manufacturing", "Operations Research", "Quality Engineering")),
    ),
)

PHY = Discipline(
    "PHY", "B.Sc Physics", "UG", "PHY", 3, 120, 2, "Laboratory",
    (
        "Mechanics", "Mathematical Physics I", "Electricity and Magnetism", "Calculus",
        "Waves and Optics", "Thermal Physics", "Mathematical Physics II", "Quantum Mechanics",
        "Solid State Physics", "Nuclear and Particle Physics",
    ),
    (
        Track("AST", "Astrophysics", (
            "Astronomy and Astrophysics", "Cosmology", "Stellar Structure",
            "Observational Astronomy", "Galactic Dynamics", "Space Physics")),
        Track("CMP", "Condensed Matter", (
            "Nanomaterials", "Semiconductor Physics", "Superconductivity",
            "Physics of Materials", "Magnetism in Solids", "Thin Film Technology")),
        Track("CPH", "Computational Physics", (
            "Computational Physics", "Numerical Methods", "Physics Simulations in Python",
            "Data Analysis for Physics", "Monte Carlo Methods", "Scientific Computing")),
    ),
)

BBA = Discipline(
    "BBA", "BBA", "UG", "MGMT", 3, 120, 1, "Practicum",
    (
        "Principles of Management", "Financial Accounting", "Business Economics",
        "Business Communication", "Organisational Behaviour", "Marketing Management",
        "Business Statistics", "Cost and Management Accounting", "Human Resource Management",
        "Financial Management", "Business Law", "Strategic Management",
    ),
    (
        Track("FIN", "Finance", (
            "Investment Analysis", "Banking and Insurance", "Corporate Finance",
            "Financial Markets", "Personal Financial Planning", "International Finance")),
        Track("MKT", "Marketing", (
            "Consumer Behaviour", "Digital Marketing", "Brand Management", "Sales Management",
            "Retail Management", "Services Marketing")),
        Track("HRM", "Human Resources", (
            "Talent Acquisition", "Compensation Management", "Training and Development",
            "Labour Laws", "Performance Management", "Organisational Development")),
    ),
)

CE = Discipline(
    "CE", "B.Tech Civil Engineering", "UG", "CIVIL", 4, 160, 2, "Laboratory",
    (
        "Engineering Mathematics I", "Engineering Physics", "Engineering Graphics",
        "Programming for Problem Solving", "Surveying", "Building Materials",
        "Mechanics of Solids", "Fluid Mechanics", "Structural Analysis",
        "Geotechnical Engineering", "Transportation Engineering",
        "Design of Concrete Structures", "Hydrology", "Estimation and Costing",
    ),
    (
        Track("STR", "Structures", (
            "Design of Steel Structures", "Prestressed Concrete", "Earthquake Engineering",
            "Bridge Engineering")),
        Track("TRN", "Transportation", (
            "Traffic Engineering", "Pavement Design", "Urban Transportation Planning",
            "Railway Engineering")),
        Track("ENV", "Environmental", (
            "Environmental Engineering", "Solid Waste Management",
            "Water Resources Engineering", "Air Pollution Control")),
    ),
)

EE = Discipline(
    "EE", "B.Tech Electrical Engineering", "UG", "EEE", 4, 160, 2, "Laboratory",
    _BTECH_FIRST_YEAR + (
        "Electrical Circuit Analysis", "Electrical Machines I", "Analog Electronics",
        "Electromagnetic Fields", "Power Systems I", "Control Systems",
        "Electrical Machines II", "Power Electronics", "Power System Protection",
        "Electrical Drives",
    ),
    (
        Track("PWR", "Power Systems", (
            "Power System Operation", "HVDC Transmission", "Smart Grids",
            "High Voltage Engineering")),
        Track("CTL", "Control", (
            "Digital Control Systems", "Nonlinear Control", "Process Control",
            "Industrial Automation")),
        Track("PEL", "Power Electronics", (
            "Electric Vehicles", "Renewable Energy Converters",
            "Switched Mode Power Supplies", "Power Quality")),
    ),
)

MATH = Discipline(
    "MATH", "B.Sc Mathematics", "UG", "MATH", 3, 120, 1, "Laboratory",
    (
        "Calculus", "Algebra", "Analytical Geometry", "Differential Equations", "Real Analysis",
        "Group Theory", "Linear Algebra", "Complex Analysis", "Numerical Analysis", "Ring Theory",
    ),
    (
        Track("PUR", "Pure Mathematics", (
            "Topology", "Number Theory", "Functional Analysis", "Differential Geometry")),
        Track("APP", "Applied Mathematics", (
            "Mathematical Modelling", "Operations Research", "Fluid Dynamics",
            "Optimisation Techniques")),
        Track("STA", "Statistics", (
            "Probability Theory", "Statistical Inference", "Regression Analysis",
            "Time Series Analysis")),
    ),
)

BCOM = Discipline(
    "BCOM", "B.Com", "UG", "COMM", 3, 120, 1, "Practicum",
    (
        "Financial Accounting", "Business Economics", "Business Organisation",
        "Business Mathematics", "Corporate Accounting", "Income Tax Law and Practice",
        "Business Statistics", "Company Law", "Cost Accounting", "Auditing",
    ),
    (
        Track("ACC", "Accounting", (
            "Advanced Accounting", "Management Accounting", "Forensic Accounting",
            "Accounting Information Systems")),
        Track("TAX", "Taxation", (
            "Goods and Services Tax", "Corporate Tax Planning", "International Taxation",
            "Tax Procedures")),
        Track("BNK", "Banking", (
            "Banking Operations", "Insurance Principles", "Financial Services", "Microfinance")),
    ),
)

ECO = Discipline(
    "ECO", "BA Economics", "UG", "ECO", 3, 120, 1, "Practicum",
    (
        "Introductory Microeconomics", "Mathematical Methods for Economics",
        "Introductory Macroeconomics", "Statistics for Economics",
        "Intermediate Microeconomics", "Intermediate Macroeconomics", "Indian Economy",
        "Development Economics", "International Economics", "Public Economics",
    ),
    (
        Track("DEV", "Development", (
            "Economics of Development", "Environmental Economics", "Agricultural Economics",
            "Health Economics")),
        Track("QNT", "Econometrics", (
            "Introductory Econometrics", "Applied Econometrics", "Time Series Econometrics",
            "Data Analysis for Economics")),
        Track("POL", "Public Policy", (
            "Public Finance", "Political Economy", "Policy Evaluation", "Urban Economics")),
    ),
)

MBA = Discipline(
    "MBA", "MBA", "PG", "MGMT", 2, 100, 1, "Practicum",
    (
        "Managerial Economics", "Accounting for Managers", "Marketing Management",
        "Organisational Behaviour", "Strategic Management", "Business Analytics",
        "Corporate Governance",
    ),
    (
        Track("FIN", "Finance", (
            "Security Analysis and Portfolio Management", "Derivatives and Risk Management",
            "Mergers and Acquisitions")),
        Track("MKT", "Marketing", (
            "Marketing Research", "Integrated Marketing Communication", "B2B Marketing")),
        Track("OPS", "Operations", (
            "Supply Chain Management", "Project Management", "Service Operations")),
    ),
)

BCA = Discipline(
    "BCA", "BCA", "UG", "CA", 3, 120, 2, "Laboratory",
    (
        "Programming in C", "Computer Fundamentals", "Mathematics for Computing",
        "Digital Electronics", "Data Structures", "Object Oriented Programming with Java",
        "Database Management Systems", "Operating Systems", "Computer Networks",
        "Software Engineering",
    ),
    (
        Track("WEB", "Web Development", (
            "Web Technologies", "Full Stack Development", "Mobile Application Development",
            "Cloud Application Development")),
        Track("DSC", "Data Science", (
            "Python for Data Science", "Data Mining", "Data Visualisation",
            "Big Data Analytics")),
        Track("CYB", "Cyber Security", (
            "Information Security", "Network Security", "Ethical Hacking", "Cyber Law")),
    ),
)

CHEM = Discipline(
    "CHEM", "B.Sc Chemistry", "UG", "CHEM", 3, 120, 2, "Laboratory",
    (
        "Inorganic Chemistry I", "Physical Chemistry I", "Organic Chemistry I",
        "Mathematics for Chemists", "Inorganic Chemistry II", "Organic Chemistry II",
        "Physical Chemistry II", "Spectroscopy", "Analytical Chemistry", "Polymer Chemistry",
    ),
    (
        Track("ORG", "Organic Chemistry", (
            "Medicinal Chemistry", "Natural Products", "Green Chemistry", "Organic Synthesis")),
        Track("ANL", "Analytical Chemistry", (
            "Instrumental Methods", "Environmental Chemistry", "Chromatography",
            "Electroanalytical Methods")),
        Track("MAT", "Materials Chemistry", (
            "Materials Chemistry", "Nanochemistry", "Industrial Chemistry",
            "Surface Chemistry")),
    ),
)

#: one per term semester, by position (1st term semester, 2nd, ...); skill courses run in the
#: semesters without electives, value-added courses in every semester
SKILL_ENHANCEMENT_COURSES = (
    "Communication Skills", "Technical Report Writing", "Spreadsheet Modelling", "Design Thinking",
)
VALUE_ADDED_COURSES = (
    "Environmental Studies", "Indian Constitution", "Universal Human Values", "Yoga and Wellness",
)


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """How big an institution is and how its semesters are built.

    ``n_programs = clip(round(n_students / students_per_program), min_programs, max_programs)``
    (``max_programs=None``: no cap; programmes beyond the discipline list are the same
    disciplines on further campuses).
    """

    name: str
    institution_id: str
    disciplines: tuple[Discipline, ...]  # in the order programmes are added
    min_programs: int
    max_programs: int | None
    students_per_program: int
    core_per_semester: int  # in semesters without electives
    core_per_elective_semester: int
    tracks_per_program: int  # the first tracks of the discipline
    electives_per_track: int  # per elective semester


UNIVERSITY = Profile(
    name="university",
    institution_id="INST-DEMO-UNIVERSITY",
    disciplines=(CSE, ECE, ME, PHY, BBA, CE, EE, MATH, BCOM, ECO, MBA, BCA, CHEM),
    min_programs=5,
    max_programs=None,
    students_per_program=600,
    core_per_semester=4,
    core_per_elective_semester=3,
    tracks_per_program=3,
    electives_per_track=3,
)

COLLEGE = Profile(
    name="college",
    institution_id="INST-DEMO-COLLEGE",
    disciplines=(BCA, BCOM, BBA),
    min_programs=2,
    max_programs=3,
    students_per_program=600,
    core_per_semester=4,
    core_per_elective_semester=3,
    tracks_per_program=2,
    electives_per_track=2,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (UNIVERSITY, COLLEGE)}


# --------------------------------------------------------------------------- enrolment behaviour

#: probability that a student of a (programme, semester) takes each of its non-elective courses
TAKE_PROBABILITY = {
    "CORE": 0.98,
    "PRACTICAL": 0.97,
    "SKILL_ENHANCEMENT": 0.95,
    "VALUE_ADDED": 0.60,
}
OWN_TRACK_TAKE = 0.85  # each elective of the student's own track
OTHER_TRACK_TAKE = 0.04  # each elective of another track of the programme (noise)
#: each programme's track popularity ~ Dirichlet(TRACK_CONCENTRATION, ...)
TRACK_CONCENTRATION = 6.0
BACKLOG_SHARE = 0.04  # of students past their first year: + one core course of an earlier semester
CROSS_PROGRAM_SHARE = 0.03  # of students past semester 1: + one elective of another programme
INACTIVE_SHARE = 0.01
SHIFT_PREFERENCE_SHARE = 0.70  # students with a preferred shift; the rest leave it empty
#: relative size of the cohorts of term semester 1, 3, 5, 7 (drop-outs)
COHORT_RETENTION = (1.00, 0.92, 0.86, 0.81)
PROGRAM_SIZE_SIGMA = 0.5  # programme intake ~ lognormal(0, sigma)
#: ``--groups large``: mean students of a programme x semester group, and the range of the
#: groups' relative sizes (1M students: ~32 groups of ~10k-60k)
LARGE_GROUP_STUDENTS = 32_000
LARGE_GROUP_WEIGHTS = (1.0, 6.0)

#: (cell value, share); lists use ";" in the returned tables
LANGUAGE_CHOICES = (
    ("English", 0.50),
    ("English;Hindi", 0.28),
    ("English;Tamil", 0.05),
    ("English;Telugu", 0.05),
    ("English;Bengali", 0.04),
    ("English;Marathi", 0.04),
    ("Hindi", 0.04),
)
GENDER_SHARES = (("Male", 0.52), ("Female", 0.475), ("Other", 0.005))
CGPA_MEAN, CGPA_SD, CGPA_MIN, CGPA_MAX = 7.4, 0.9, 5.0, 10.0
BACKLOG_CGPA_PENALTY = 1.0  # students carrying a backlog have a lower CGPA

MALE_FIRST_NAMES = (
    "Aarav", "Vivaan", "Aditya", "Arjun", "Reyansh", "Krishna", "Ishaan", "Rohan", "Kabir",
    "Aryan", "Siddharth", "Rahul", "Vikram", "Karthik", "Nikhil", "Pranav", "Harsh", "Manish",
    "Imran", "Farhan", "Rajesh", "Suresh", "Abhishek", "Gaurav", "Anirudh", "Varun",
    "Dhruv", "Yash", "Tanmay", "Joseph",
)
FEMALE_FIRST_NAMES = (
    "Aadhya", "Ananya", "Diya", "Saanvi", "Ishita", "Kavya", "Priya", "Sneha", "Pooja", "Meera",
    "Riya", "Shreya", "Nandini", "Lakshmi", "Divya", "Aishwarya", "Sana", "Zoya", "Fatima",
    "Neha", "Anjali", "Swati", "Tanvi", "Radhika", "Keerthi", "Bhavana", "Harini", "Simran",
    "Mariam", "Sarah",
)
LAST_NAMES = (
    "Sharma", "Verma", "Iyer", "Nair", "Reddy", "Patel", "Das", "Banerjee", "Khan", "Singh",
    "Gupta", "Mehta", "Joshi", "Kulkarni", "Menon", "Pillai", "Rao", "Naidu", "Chatterjee",
    "Mukherjee", "Bose", "Ghosh", "Sinha", "Mishra", "Pandey", "Yadav", "Chauhan", "Agarwal",
    "Jain", "Shah", "Desai", "Kapoor", "Malhotra", "Saxena", "Krishnan", "Fernandes", "Hussain",
    "Siddiqui", "Gill", "Dutta",
)


# --------------------------------------------------------------------------- shifts and rooms

#: shift_id, shift_code, shift_name, shift_type, start_time, end_time
SHIFTS = (
    ("SH-MOR", "MORNING", "Morning Shift", "MORNING", "08:00", "12:30"),
    ("SH-AFT", "AFTERNOON", "Afternoon Shift", "AFTERNOON", "12:30", "17:00"),
    ("SH-EVE", "EVENING", "Evening Shift", "EVENING", "17:00", "21:00"),
)
#: base share of MORNING, AFTERNOON, EVENING among students with a preference; each programme
#: draws its own shares from Dirichlet(SHIFT_PREFERENCE_CONCENTRATION * base)
SHIFT_PREFERENCE_BASE = (0.50, 0.30, 0.20)
SHIFT_PREFERENCE_CONCENTRATION = 12.0

#: batch sizes the institution plans for (also the dynamic_parameters defaults)
BATCH_SIZE_MIN, BATCH_SIZE_TARGET, BATCH_SIZE_MAX = 15, 35, 60
BATCH_SIZE_TARGET_OVERRIDE = 40  # PROGRAM-level override, see entity_parameter_values
ROOM_SLACK = 1.3  # rooms = ceil(expected batches / number of shifts * ROOM_SLACK)
#: capacity -> share of rooms (allocated by largest remainder, so small institutions get the
#: most common sizes first)
ROOM_CAPACITY_SHARES = ((30, 0.08), (40, 0.17), (50, 0.20), (60, 0.25), (72, 0.15), (90, 0.09),
                        (120, 0.06))
ROOM_TYPE_SHARES = (("CLASSROOM", 0.75), ("LAB", 0.15), ("SEMINAR", 0.10))
ROOM_TYPE_LABEL = {"CLASSROOM": "Classroom", "LAB": "Laboratory", "SEMINAR": "Seminar Hall"}
ROOM_SHIFT_PREFERENCE_SHARE = 0.10
BUILDINGS = (("Main Block", "MB"), ("Science Block", "SB"), ("Engineering Block", "EB"),
             ("Management Block", "MG"), ("Academic Block", "AB"))
FLOORS_PER_BUILDING = 5  # floors 1..5
ROOMS_PER_FLOOR = 20  # room numbers <floor>01 .. <floor>20

# --------------------------------------------------------------------------- prerequisites

PREREQUISITE_SHARE = 0.25  # of (core k of a term semester, core k of the previous one) pairs
PREREQUISITE_OPTIONAL_SHARE = 0.2  # of prerequisites with is_mandatory = false
MINIMUM_GRADES = (("D", 0.5), ("C", 0.4), ("B", 0.1))

# --------------------------------------------------------------------------- EAV parameters

EAV_EFFECTIVE_FROM = "2024-01-01"
SHIFT_RULE = {"field_name": "preferred_shift", "rule_type": "homogeneous",
              "constraint_level": "soft", "weight": 3, "threshold": 0.8}
LANGUAGE_RULE = {"field_name": "preferred_languages", "rule_type": "homogeneous",
                 "constraint_level": "soft", "weight": 2, "threshold": 0.7}
RULE_VALIDATION = {
    "required": ["field_name", "rule_type", "constraint_level", "weight"],
    "rule_type": ["no_mix", "homogeneous", "max_variance", "capacity_limit"],
    "constraint_level": ["hard", "soft"],
    "weight": {"min": 0, "max": 10},
    "threshold": {"min": 0, "max": 1},
}
